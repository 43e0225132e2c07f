"""Tune an agent's hyperparameters with Optuna: ``python -m ebmm_rl.tune --agent ppo_ebmm --env EBMM-MemoryTMaze``.

Each trial samples PPO's and the memory's settings, trains ``--seeds-per-trial`` runs (normal run directories under
``--run-dir``), is pruned on their evaluations and scored by the area under their learning curves; ``--min-fps`` makes
slower configs infeasible (:mod:`ebmm_rl.runs.tuning`). The study is kept in ``--storage``, by default a SQLite file
under ``--run-dir``: run the same command again, in another process or on another machine with a shared RDB URL
(``postgresql://...``), and it joins the study. ``--workers N`` runs N trials at a time in processes of their own.

At the end it writes ``<study>_best.yml`` (the best trial's config as a section keyed by env id, ready to paste into
``configs/<agent>.yml``) and ``<study>_trials.csv`` (every trial: state, value, parameters, fps, run directory).
"""

from __future__ import annotations

import csv
import multiprocessing
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from ebmm_rl import envs
from ebmm_rl.agents import agent_names, get_agent
from ebmm_rl.runs import arguments
from ebmm_rl.runs.config import load_config
from ebmm_rl.runs.interrupt import forward_stop_signals, stop_on_signals, stop_with_parent

PROGRAM = "python -m ebmm_rl.tune"
INSTALL_HINT = 'Hyperparameter search needs Optuna: pip install "ebmm-rl[tune]" (or pip install optuna).'


def build_parser() -> arguments.ArgumentParser:
    """The command-line parser."""
    parser = arguments.ArgumentParser(prog=PROGRAM, description=__doc__.split("\n", 1)[0])
    parser.add_argument("--agent", default="ppo_ebmm", help=f"one of {', '.join(agent_names())} (default ppo_ebmm)")
    parser.add_argument("--env", default="EBMM-MemoryTMaze", help="env id or alias (default EBMM-MemoryTMaze)")
    parser.add_argument(
        "--trials", type=arguments.positive_int, default=20, help="finished trials the study should hold (default 20)"
    )
    parser.add_argument("--timesteps", type=arguments.positive_int, default=100_000, help="steps per trial (default 1e5)")
    parser.add_argument(
        "--n-evaluations", type=arguments.positive_int, default=5, help="evaluations per trial, where pruning happens"
    )
    parser.add_argument("--eval-episodes", type=arguments.positive_int, default=20, help="episodes per evaluation")
    parser.add_argument(
        "--metric",
        choices=["success_rate", "mean_reward"],
        default="success_rate",
        help="the evaluation value whose learning-curve area (mean over evaluations and seeds) a trial maximises",
    )
    parser.add_argument(
        "--seeds-per-trial", type=arguments.positive_int, default=1, help="runs per trial, one seed each (default 1)"
    )
    parser.add_argument(
        "--min-fps",
        type=arguments.positive_float,
        help="trials training fewer steps per second of CPU time than this are infeasible and never the best",
    )
    parser.add_argument("--workers", type=arguments.positive_int, default=1, help="trials at a time, one process each")
    parser.add_argument("--study-name", help="the study's name (default <env>__<agent>)")
    parser.add_argument("--storage", help="Optuna storage URL (default sqlite:///<run-dir>/<study>.db)")
    parser.add_argument("--run-dir", default="runs/tune", help="where trial runs, the database and results go")
    parser.add_argument(
        "--seed", type=arguments.seed, default=0, help="trial k trains with seeds seed + k * seeds-per-trial + i"
    )
    parser.add_argument("--n-startup-trials", type=arguments.non_negative_int, default=5, help="random trials first")
    parser.add_argument(
        "--n-warmup-evaluations", type=arguments.non_negative_int, default=2, help="evaluations before pruning can start"
    )
    parser.add_argument("--n-envs", type=arguments.positive_int, help="parallel envs per trial (default: the config's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="fixed config override")
    parser.add_argument("--device", default="cpu", type=arguments.device, help="torch device: auto, cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=arguments.positive_int, default=1, help="torch threads per trial (default 1)")
    return parser


def _optimize(search: Any, config: dict[str, Any], study_args: dict[str, Any], trials: int, worker: int, target: int) -> int:
    """One process's share of the study: ``trials`` more trials, fewer once the study holds ``target`` finished ones
    (other processes, here or on other machines, may be working on it too).

    A signal during a trial stops its run as ``train`` stops one (saved, resumable) and ends the share; between two
    trials it ends the share before the next.

    :return: 0, or the exit code of the signal that stopped it (130 SIGINT, 143 SIGTERM).
    """
    import optuna

    from ebmm_rl.runs import tuning

    study = tuning.load_study(**{**study_args, "seed": study_args["seed"] + worker})
    with stop_on_signals() as stop:  # between trials; a trial's run handles signals itself meanwhile

        def stop_between_trials(study: Any, trial: Any) -> None:
            if stop():
                study.stop()

        enough = optuna.study.MaxTrialsCallback(target, states=tuning.FINISHED_STATES)
        try:
            study.optimize(
                tuning.objective(search, config),
                n_trials=trials,
                catch=(ValueError,),
                callbacks=[stop_between_trials, enough],
            )
        except tuning.TrialStopped as stopped:
            return stopped.exit_code
    return stop.exit_code


def _worker(parent_pid: int, *args: Any) -> None:
    """A worker process's main: its share of the study, exiting with :func:`_optimize`'s code; it stops as on SIGTERM
    if the tuner's process ends (:func:`~ebmm_rl.runs.interrupt.stop_with_parent`)."""
    stop_with_parent(parent_pid)
    sys.exit(_optimize(*args))


def _write_trials(study: Any, path: Path) -> None:
    params = sorted({name for trial in study.trials for name in trial.params})
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["number", "state", "value", *params, "fps", "cpu_fps", "run_dirs"])
        for trial in study.trials:
            row = [trial.number, trial.state.name, trial.value, *(trial.params.get(name) for name in params)]
            attrs = trial.user_attrs
            writer.writerow([*row, attrs.get("fps"), attrs.get("cpu_fps"), " ".join(attrs.get("run_dirs", []))])


def main(argv: list[str] | None = None) -> Any:
    """Run (or join) a study; see ``python -m ebmm_rl.tune --help``.

    :param argv: command-line arguments without the program name; ``None`` reads ``sys.argv``.
    :return: the Optuna study.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from ebmm_rl.runs import tuning
    except ImportError:
        parser.error(INSTALL_HINT)
    try:
        agent = get_agent(args.agent)
        env_id = envs.resolve_env_id(args.env)
        config = load_config(agent, env_id, overrides=args.set)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    name = args.study_name or f"{env_id}__{agent.name}"
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    storage = args.storage or f"sqlite:///{run_dir / name}.db"
    search = tuning.Search(
        agent=agent.name,
        env=env_id,
        timesteps=args.timesteps,
        n_evaluations=args.n_evaluations,
        eval_episodes=args.eval_episodes,
        seed=args.seed,
        metric=args.metric,
        run_dir=str(run_dir / "trials"),
        device=args.device,
        threads=args.threads,
        n_envs=args.n_envs,
        overrides=tuple(args.set),
        seeds_per_trial=args.seeds_per_trial,
        min_fps=args.min_fps,
    )
    study_args = {
        "name": name,
        "storage": storage,
        "seed": args.seed,
        "n_startup_trials": args.n_startup_trials,
        "n_warmup_evaluations": args.n_warmup_evaluations,
    }
    remaining = max(args.trials - tuning.finished_trials(tuning.load_study(**study_args)), 0)  # created once here
    config = {**config, "n_envs": args.n_envs or config["n_envs"]}
    print(
        f"Study {name} in {storage}: {remaining} more trials of {args.seeds_per_trial} x {args.timesteps} steps, "
        f"{args.workers} at a time"
    )
    shares = [remaining // args.workers + (worker < remaining % args.workers) for worker in range(args.workers)]
    if args.workers == 1:
        exit_code = _optimize(search, config, study_args, remaining, 0, args.trials)
    else:
        # spawn: each worker starts clean (no inherited torch threads or open database connections).
        context = multiprocessing.get_context("spawn")
        workers = [
            context.Process(target=_worker, args=(os.getpid(), search, config, study_args, share, worker, args.trials))
            for worker, share in enumerate(shares)
            if share > 0
        ]
        with forward_stop_signals(
            lambda: [process.pid for process in workers], "stopping the running trials (each run saves its state)"
        ) as received:
            for process in workers:
                process.start()
            for process in workers:
                process.join()
        codes = [process.exitcode for process in workers if process.exitcode]
        exit_code = 128 + int(received[0]) if received else max(codes, default=0)
    study = tuning.load_study(**study_args)
    _write_trials(study, run_dir / f"{name}_trials.csv")
    print(f"{tuning.finished_trials(study)} finished trials; table in {run_dir / f'{name}_trials.csv'}")
    if exit_code:
        print(
            f"Stopped (exit code {exit_code}): a trial stopped mid-run is marked failed and does not count; the study is "
            f"kept in {storage}, and the same command continues it.",
            file=sys.stderr,
        )
        raise SystemExit(exit_code)
    try:
        best = tuning.best_trial(study, args.min_fps)
    except ValueError as error:
        print(f"No best config: {error}", file=sys.stderr)
        return study
    best_file = run_dir / f"{name}_best.yml"
    best_file.write_text(yaml.safe_dump({env_id: best.user_attrs["config"]}, sort_keys=False))
    print(
        f"Best trial {best.number}: {args.metric} learning-curve area {best.value:.3f}, {best.user_attrs['fps']:.0f} fps "
        f"({best.user_attrs['cpu_fps']:.0f} steps per CPU second); "
        f"config in {best_file}"
    )
    return study


def cli() -> int:
    """Console-script entry point."""
    main()
    return 0


if __name__ == "__main__":
    sys.exit(cli())
