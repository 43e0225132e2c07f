"""Train an agent on a memory task: ``python -m ebmm_rl.train --env MiniGrid-Memory --agent ppo_lstm``.

Every run gets ``<run-dir>/<env>__<agent>__<seed>__<time>/`` with its resolved config, command line, seed, TensorBoard
events, evaluations, atomic checkpoints and final model (:mod:`ebmm_rl.runs.training`); ``--resume RUN_DIR`` continues
it from its latest checkpoint.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from ebmm_rl.agents import agent_names
from ebmm_rl.runs.training import DEFAULTS, SETTINGS, TRAIN_PROGRAM, TrainResult, resume_run, start_run, train_run

PROGRAM = TRAIN_PROGRAM


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (options default to ``None`` so that ``--resume`` can tell which were given)."""
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.split("\n", 1)[0])
    parser.add_argument("--env", help=f"env id or alias (default {DEFAULTS['env']}); see ebmm_rl.envs.ENV_ALIASES")
    parser.add_argument("--agent", help=f"one of {', '.join(agent_names())} (default {DEFAULTS['agent']})")
    parser.add_argument("--timesteps", type=int, help="total environment steps (default: n_timesteps of the config)")
    parser.add_argument("--seed", type=int, help=f"random seed (default {DEFAULTS['seed']})")
    parser.add_argument("--n-envs", type=int, help="parallel training envs (default: n_envs of the config)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help=f"torch device (default {DEFAULTS['device']})")
    parser.add_argument("--vec-env", choices=["dummy", "subproc"], help="DummyVecEnv or SubprocVecEnv (default dummy)")
    parser.add_argument("--config", metavar="FILE", help="YAML file over configs/<agent>.yml (flat, or keyed by env id)")
    parser.add_argument(
        "--set", action="append", default=None, metavar="KEY=VALUE", help="override a config key (YAML value, dotted keys)"
    )
    parser.add_argument("--run-dir", metavar="DIR", help=f"parent of the run directories (default {DEFAULTS['run_dir']})")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its latest checkpoint")
    parser.add_argument(
        "--init-from",
        metavar="RUN_DIR_OR_ZIP",
        help="start a new run from another run's trained weights (same agent and architecture): a curriculum step, e.g. "
        "train on a short delay, then on the long one",
    )
    parser.add_argument("--eval-freq", type=int, help=f"steps between evaluations, 0: none (default {DEFAULTS['eval_freq']})")
    parser.add_argument("--eval-episodes", type=int, help=f"episodes per evaluation (default {DEFAULTS['eval_episodes']})")
    parser.add_argument(
        "--eval-deterministic", action="store_const", const=True, help="evaluate greedy actions (default: sample)"
    )
    parser.add_argument(
        "--checkpoint-freq", type=int, help=f"steps between checkpoints, 0: none (default {DEFAULTS['checkpoint_freq']})"
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> TrainResult:
    """Train (or resume) one run; see ``python -m ebmm_rl.train --help``.

    :param argv: command-line arguments without the program name; ``None`` reads ``sys.argv``.
    :return: the run's :class:`~ebmm_rl.runs.training.TrainResult`.
    :raises ValueError: for an unknown agent, env id or config key, or a bad ``--set`` (with suggestions).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    command = shlex.join([*shlex.split(PROGRAM), *argv])
    if args.resume is None:
        options = {key: getattr(args, key) for key in (*SETTINGS, "run_dir")}
        run_dir, settings, config = start_run(options, command, args.config, args.set or [], args.timesteps, args.n_envs)
        checkpoint = None
    else:
        not_settings = ("resume", "timesteps", "threads", "no_progress")
        changes = {key: value for key, value in vars(args).items() if key not in not_settings}
        try:
            run_dir, settings, config, checkpoint = resume_run(args.resume, command, changes, args.timesteps)
        except ValueError as error:
            parser.error(str(error))
    return train_run(run_dir, settings, config, checkpoint, threads=args.threads, progress_bar=not args.no_progress)


def cli() -> int:
    """Console-script entry point: exit status 0, or 130 after Ctrl-C."""
    return 130 if main().interrupted else 0


if __name__ == "__main__":
    sys.exit(cli())
