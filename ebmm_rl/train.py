"""Train an agent on a memory task: ``python -m ebmm_rl.train --env MiniGrid-Memory --agent ppo_lstm``.

Every run gets ``<run-dir>/<env>__<agent>__<seed>__<time>/`` with its resolved config, command line, seed, TensorBoard
events, evaluations, exact atomic checkpoints, best and final model (:mod:`ebmm_rl.runs.training`); a config section
with a ``curriculum`` trains through its stages in that one run (:mod:`ebmm_rl.runs.curriculum`; ``--set
curriculum=null`` trains on the env alone). ``--resume RUN_DIR`` continues a run from its newest readable checkpoint.
SIGINT (Ctrl-C) and SIGTERM stop a run and save it.
"""

from __future__ import annotations

import shlex
import sys

from ebmm_rl.agents import agent_names
from ebmm_rl.runs import arguments
from ebmm_rl.runs.training import (
    DEFAULTS,
    SETTINGS,
    TRAIN_PROGRAM,
    TrainResult,
    prepare_run,
    resume_run,
    start_run,
    train_run,
)

PROGRAM = TRAIN_PROGRAM


def build_parser() -> arguments.ArgumentParser:
    """The command-line parser (options default to ``None`` so that ``--resume`` can tell which were given)."""
    parser = arguments.ArgumentParser(prog=PROGRAM, description=__doc__.split("\n", 1)[0])
    parser.add_argument("--env", help=f"env id or alias (default {DEFAULTS['env']}); see ebmm_rl.envs.ENV_ALIASES")
    parser.add_argument("--agent", help=f"one of {', '.join(agent_names())} (default {DEFAULTS['agent']})")
    parser.add_argument(
        "--timesteps", type=arguments.positive_int, help="total environment steps (default: n_timesteps of the config)"
    )
    parser.add_argument("--seed", type=arguments.seed, help=f"random seed (default {DEFAULTS['seed']})")
    parser.add_argument("--n-envs", type=arguments.positive_int, help="parallel training envs (default: n_envs of the config)")
    parser.add_argument(
        "--device", type=arguments.device, help=f"torch device: auto, cpu or cuda (default {DEFAULTS['device']})"
    )
    parser.add_argument("--vec-env", choices=["dummy", "subproc"], help="DummyVecEnv or SubprocVecEnv (default dummy)")
    parser.add_argument("--config", metavar="FILE", help="YAML file over configs/<agent>.yml (flat, or keyed by env id)")
    parser.add_argument(
        "--set", action="append", default=None, metavar="KEY=VALUE", help="override a config key (YAML value, dotted keys)"
    )
    parser.add_argument("--run-dir", metavar="DIR", help=f"parent of the run directories (default {DEFAULTS['run_dir']})")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run from its newest readable checkpoint")
    parser.add_argument(
        "--init-from",
        metavar="RUN_DIR_OR_ZIP",
        help="start a new run from another run's trained weights (same agent and architecture); a config's curriculum "
        "trains through stages in one run instead",
    )
    parser.add_argument(
        "--eval-freq",
        type=arguments.non_negative_int,
        help=f"steps between evaluations, 0: none (default {DEFAULTS['eval_freq']})",
    )
    parser.add_argument(
        "--eval-episodes", type=arguments.positive_int, help=f"episodes per evaluation (default {DEFAULTS['eval_episodes']})"
    )
    parser.add_argument(
        "--eval-deterministic",
        action="store_const",
        const=True,
        help="evaluate greedy actions (default: the config's eval_deterministic, else sample)",
    )
    parser.add_argument(
        "--checkpoint-freq",
        type=arguments.non_negative_int,
        help=f"steps between checkpoints, 0: only when stopped and at the end (default {DEFAULTS['checkpoint_freq']})",
    )
    parser.add_argument("--threads", type=arguments.positive_int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress (default: a bar on a terminal, else a line a minute and for long evaluations)",
    )
    return parser


def main(argv: list[str] | None = None) -> TrainResult:
    """Train (or resume) one run; see ``python -m ebmm_rl.train --help``.

    Bad input (an unknown agent, env id or config key, a value its consumer does not accept, a config that does not fit
    the algorithm, a run with no readable checkpoint) exits with status 2 and a one-line message, before a run
    directory is created or changed.

    :param argv: command-line arguments without the program name; ``None`` reads ``sys.argv``.
    :return: the run's :class:`~ebmm_rl.runs.training.TrainResult`.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    command = shlex.join([*shlex.split(PROGRAM), *argv])
    try:
        if args.resume is None:
            options = {key: getattr(args, key) for key in (*SETTINGS, "run_dir")}
            spec = start_run(options, command, args.config, args.set or [], args.timesteps, args.n_envs)
        else:
            not_settings = ("resume", "timesteps", "threads", "no_progress")
            changes = {key: value for key, value in vars(args).items() if key not in not_settings}
            spec = resume_run(args.resume, command, changes, args.timesteps)
        prepared = prepare_run(spec, threads=args.threads)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    return train_run(prepared, progress_bar=not args.no_progress)


def cli() -> int:
    """Console-script entry point: exit status 0, or 130 after SIGINT and 143 after SIGTERM (the run saved)."""
    return main().exit_code


if __name__ == "__main__":
    sys.exit(cli())
