"""Runs: what the RL and recall trainers share to keep their work.

- :mod:`ebmm_rl.runs.directory`: run directories (``<parent>/<name>__<time>/``) and the files an RL run writes there;
- :mod:`ebmm_rl.runs.atomic`: atomic file writes;
- :mod:`ebmm_rl.runs.checkpoints`: atomic SB3 checkpoints and finding the latest one to resume from;
- :mod:`ebmm_rl.runs.config`: agent configs (YAML keyed by env id) resolved for one run;
- :mod:`ebmm_rl.runs.experiment`: an RL run's envs and its saved model, as the command lines build and load them.

Nothing is imported here, so the recall trainer uses run directories without loading Stable-Baselines3.
"""
