"""Runs: what the RL and recall trainers share to keep their work.

- :mod:`ebmm_rl.runs.directory`: run directories (``<parent>/<name>__<time>/``) and the files an RL run writes there;
- :mod:`ebmm_rl.runs.atomic`: atomic file writes;
- :mod:`ebmm_rl.runs.arguments`: command-line values checked at the boundary (one-line errors, exit status 2);
- :mod:`ebmm_rl.runs.checkpoints`: exact, atomic SB3 checkpoints and the newest readable one to resume from;
- :mod:`ebmm_rl.runs.config`: agent configs (YAML keyed by env id) resolved for one run and checked against their
  consumers;
- :mod:`ebmm_rl.runs.curriculum`: curricula, one model trained through stages of envs and settings in one run;
- :mod:`ebmm_rl.runs.events`: a resumed run's TensorBoard events brought back to its checkpoint's step;
- :mod:`ebmm_rl.runs.experiment`: an RL run's envs and its saved model, as the command lines build and load them;
- :mod:`ebmm_rl.runs.interrupt`: stopping a run cleanly on SIGINT or SIGTERM;
- :mod:`ebmm_rl.runs.training`: one RL training run (through its curriculum's stages), started or resumed.

Nothing is imported here, so the recall trainer uses run directories without loading Stable-Baselines3.
"""
