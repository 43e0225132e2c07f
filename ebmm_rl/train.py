"""Train an agent on a memory task: ``python -m ebmm_rl.train --env MiniGrid-Memory --agent ppo_lstm``.

Every run gets ``<run-dir>/<env>__<agent>__<seed>__<time>/`` holding

- ``config.yml``: the resolved config (:mod:`ebmm_rl.config`; ``--config`` accepts it to repeat the run);
- ``args.yml``: the run settings (agent, env, seed, device, evaluation and checkpoint frequencies);
- ``command.txt``: the command line (one line per start or resume); ``seed``: the seed;
- ``tensorboard_1/``: TensorBoard events (``train/``, ``rollout/``, ``eval/``, ``time/`` and the agent's ``memory/``);
- ``evaluations.csv``: the periodic evaluations (:data:`ebmm_rl.callbacks.EVALUATION_FIELDS`);
- ``checkpoints/model_<steps>_steps.zip``: written atomically every ``--checkpoint-freq`` steps, on Ctrl-C and at the
  end; ``--resume RUN_DIR`` continues from the latest one with the run's config;
- ``final_model.zip``: the trained model.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import CallbackList, ProgressBarCallback
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecMonitor

import envs
from agents import Agent, agent_names, get_agent
from ebmm_rl.callbacks import CheckpointCallback, SuccessEvalCallback, latest_checkpoint, replace_atomically
from ebmm_rl.exploration import NoveltyBonusSchedule, VecNoveltyBonus
from ebmm_rl.rundir import new_run_dir
from ebmm_rl.config import load_config, load_yaml, split_config, validate

PROGRAM = "python -m ebmm_rl.train"
CONFIG_FILE = "config.yml"
ARGS_FILE = "args.yml"
COMMAND_FILE = "command.txt"
SEED_FILE = "seed"
EVALUATIONS_FILE = "evaluations.csv"
CHECKPOINT_DIR = "checkpoints"
FINAL_MODEL = "final_model.zip"
TENSORBOARD_NAME = "tensorboard"
EVAL_SEED_OFFSET = 1_000_000
"""Evaluation envs are seeded with ``seed + EVAL_SEED_OFFSET``, so they never replay training episodes."""

DEFAULTS: dict[str, Any] = {
    "env": "MiniGrid-Memory",
    "agent": "ppo_ebmm",
    "seed": 0,
    "device": "auto",
    "run_dir": "runs",
    "vec_env": "dummy",
    "init_from": None,
    "eval_freq": 20_000,
    "eval_episodes": 50,
    "eval_deterministic": False,
    "checkpoint_freq": 100_000,
}
SETTINGS = (
    "agent",
    "env",
    "seed",
    "device",
    "vec_env",
    "eval_freq",
    "eval_episodes",
    "eval_deterministic",
    "checkpoint_freq",
    "init_from",
)
"""Run settings saved in ``args.yml``."""
RESUME_KEEPS = ("env", "agent", "seed", "n_envs", "config", "set", "run_dir", "init_from")
"""Options a resumed run takes from the run it continues; giving them with ``--resume`` is an error."""


@dataclass(frozen=True)
class TrainResult:
    """What :func:`main` returns.

    :param run_dir: the run directory.
    :param model_path: the final model, or the checkpoint saved on interruption.
    :param num_timesteps: environment steps trained, in total over all resumes.
    :param success_rate: success rate of the final evaluation (``None`` if interrupted).
    :param mean_reward: mean return of the final evaluation (``None`` if interrupted).
    :param fps: environment steps per second of this session (evaluations included).
    :param interrupted: whether training stopped on Ctrl-C (resume with ``--resume run_dir``).
    """

    run_dir: Path
    model_path: Path
    num_timesteps: int
    success_rate: float | None
    mean_reward: float | None
    fps: float
    interrupted: bool = False


def make_vec_env(
    agent: Agent,
    env_id: str,
    config: dict[str, Any],
    n_envs: int,
    seed: int,
    vec_env: str = "dummy",
    novel_poses: bool = False,
) -> VecEnv:
    """Vectorised, monitored envs wrapped the agent's way.

    :param agent: the agent (its window and oracle options).
    :param env_id: a registered env id or alias.
    :param config: a resolved config (``window``, ``env_kwargs``).
    :param n_envs: number of envs.
    :param seed: env ``i`` is seeded with ``seed + i`` at its first reset.
    :param vec_env: ``"dummy"`` (one process) or ``"subproc"`` (one process per env).
    :param novel_poses: the envs report new poses (:class:`envs.NovelPoses`), for :class:`VecNoveltyBonus`.
    :return: the ``VecMonitor``-wrapped vector env.
    """
    env_fn = functools.partial(envs.make_env, env_id, novel_poses=novel_poses, **agent.env_options(config))
    vec_env_cls = {"dummy": DummyVecEnv, "subproc": SubprocVecEnv}[vec_env]
    vectorized = vec_env_cls([env_fn] * n_envs)
    vectorized.seed(seed)
    return VecMonitor(vectorized)


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (options default to ``None`` so that ``--resume`` can tell which were given)."""
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.split("\n", 1)[0])
    parser.add_argument("--env", help=f"env id or alias (default {DEFAULTS['env']}); see envs.ENV_ALIASES")
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


def model_file(path: str | Path) -> Path:
    """The model of a run: a ``.zip`` as is, or a run directory's final model, else its latest checkpoint.

    :raises FileNotFoundError: if there is none.
    """
    path = Path(path)
    if path.is_file():
        return path
    found = path / FINAL_MODEL if (path / FINAL_MODEL).is_file() else latest_checkpoint(path / CHECKPOINT_DIR)
    if found is None:
        raise FileNotFoundError(f"{path} is neither a model .zip nor a run directory holding {FINAL_MODEL} or a checkpoint.")
    return found


def _command_line(argv: list[str]) -> str:
    return shlex.join([*shlex.split(PROGRAM), *argv])


def _start(args: argparse.Namespace, argv: list[str]) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """Resolve the settings and config of a new run and write its directory."""
    settings = {key: DEFAULTS[key] if getattr(args, key) is None else getattr(args, key) for key in SETTINGS}
    settings["env"] = envs.resolve_env_id(settings["env"])
    agent = get_agent(settings["agent"])
    overrides = list(args.set or [])
    config = load_config(agent, settings["env"], args.config, overrides)
    for key, value in (("n_timesteps", args.timesteps), ("n_envs", args.n_envs)):
        if value is not None:
            config[key] = value
    validate(config, agent, "--timesteps/--n-envs")
    run_name = f"{settings['env']}__{agent.name}__{settings['seed']}"
    run_dir = new_run_dir(Path(args.run_dir or DEFAULTS["run_dir"]), run_name)
    (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
    (run_dir / ARGS_FILE).write_text(yaml.safe_dump(settings, sort_keys=False))
    (run_dir / SEED_FILE).write_text(f"{settings['seed']}\n")
    (run_dir / COMMAND_FILE).write_text(_command_line(argv) + "\n")
    return run_dir, settings, config


def _resume(args: argparse.Namespace, argv: list[str], parser: argparse.ArgumentParser) -> tuple[Path, dict, dict, Path]:
    """Read a run's settings and config back, apply the options given now, and find its latest checkpoint."""
    given = [option for option in RESUME_KEEPS if getattr(args, option) is not None]
    if given:
        options = ", ".join("--" + option.replace("_", "-") for option in given)
        parser.error(f"--resume keeps the run's env, agent, seed, config and directory; drop {options}.")
    run_dir = Path(args.resume)
    if not (run_dir / ARGS_FILE).is_file() or not (run_dir / CONFIG_FILE).is_file():
        parser.error(f"{run_dir} is not a run directory (it needs {ARGS_FILE} and {CONFIG_FILE}).")
    checkpoint = latest_checkpoint(run_dir / CHECKPOINT_DIR)
    if checkpoint is None:
        parser.error(f"{run_dir / CHECKPOINT_DIR} holds no checkpoint to resume from; start a new run instead.")
    settings = load_yaml(run_dir / ARGS_FILE)
    settings.update({key: getattr(args, key) for key in SETTINGS if getattr(args, key, None) is not None})
    config = load_yaml(run_dir / CONFIG_FILE)
    if args.timesteps is not None:
        config["n_timesteps"] = args.timesteps
        (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
    (run_dir / ARGS_FILE).write_text(yaml.safe_dump(settings, sort_keys=False))
    with open(run_dir / COMMAND_FILE, "a") as file:
        file.write(_command_line(argv) + "\n")
    return run_dir, settings, config, checkpoint


def _summary(agent: str, env_id: str, result: TrainResult, episodes: int) -> str:
    """The one line printed at the end of a run."""
    if result.interrupted:
        return (
            f"{agent} on {env_id}: interrupted at {result.num_timesteps} steps ({result.fps:.0f} fps); checkpoint saved to "
            f"{result.model_path}; continue with: {PROGRAM} --resume {shlex.quote(str(result.run_dir))}"
        )
    return (
        f"{agent} on {env_id}: success {result.success_rate:.1%}, mean return {result.mean_reward:.3f} "
        f"({episodes} episodes) after {result.num_timesteps} steps, {result.fps:.0f} fps; model saved to {result.model_path}"
    )


def main(argv: list[str] | None = None) -> TrainResult:
    """Train (or resume) one run; see ``python -m ebmm_rl.train --help``.

    :param argv: command-line arguments without the program name; ``None`` reads ``sys.argv``.
    :return: the run's :class:`TrainResult`.
    :raises ValueError: for an unknown agent, env id or config key, or a bad ``--set`` (with suggestions).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.resume is None:
        run_dir, settings, config = _start(args, argv)
        checkpoint = None
    else:
        run_dir, settings, config, checkpoint = _resume(args, argv, parser)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    agent = get_agent(settings["agent"])
    env_id, seed = settings["env"], settings["seed"]
    run, algorithm_kwargs = split_config(config, agent)

    novelty_bonus = run.get("novelty_bonus") or 0.0
    env = make_vec_env(agent, env_id, config, run["n_envs"], seed, settings["vec_env"], novel_poses=novelty_bonus > 0)
    if novelty_bonus > 0:
        # Outside VecMonitor: the logged episode returns and every evaluation stay on the task's own reward.
        env = VecNoveltyBonus(env, novelty_bonus)
    eval_env = make_vec_env(agent, env_id, config, min(run["n_envs"], settings["eval_episodes"]), seed + EVAL_SEED_OFFSET)
    model: BaseAlgorithm
    if checkpoint is None:
        model = agent.algorithm(
            env=env, seed=seed, device=settings["device"], tensorboard_log=str(run_dir), **algorithm_kwargs
        )
        if settings.get("init_from"):
            source = model_file(settings["init_from"])
            try:
                model.set_parameters(str(source), exact_match=True, device=model.device)
            except (RuntimeError, ValueError) as error:
                raise ValueError(
                    f"--init-from {source}: its weights do not fit this run's {agent.name} model ({error}); start from a "
                    "run of the same agent with the same policy_kwargs (the env's observation space must match too)"
                ) from None
            print(f"Initialised from {source}")
    else:
        model = agent.algorithm.load(checkpoint, env=env, device=settings["device"], tensorboard_log=str(run_dir))
        model.set_random_seed(seed + model.num_timesteps)  # new episodes, not a replay of the first ones
        print(f"Resuming {run_dir} from {checkpoint} at {model.num_timesteps} steps")

    checkpoints = CheckpointCallback(settings["checkpoint_freq"], run_dir / CHECKPOINT_DIR)
    evaluation = SuccessEvalCallback(
        eval_env,
        eval_freq=settings["eval_freq"],
        n_eval_episodes=settings["eval_episodes"],
        deterministic=settings["eval_deterministic"],
        log_path=run_dir / EVALUATIONS_FILE,
    )
    callbacks = [evaluation, checkpoints]  # a checkpoint at step N follows the evaluation at N
    if novelty_bonus > 0:
        callbacks.append(NoveltyBonusSchedule(env, novelty_bonus, run["novelty_bonus_steps"]))
    progress = None if args.no_progress else ProgressBarCallback()
    if progress is not None:
        callbacks.append(progress)
    start_steps, start_time = model.num_timesteps, time.perf_counter()

    def fps() -> float:
        return (model.num_timesteps - start_steps) / max(time.perf_counter() - start_time, 1e-9)

    try:
        try:
            model.learn(
                max(run["n_timesteps"] - model.num_timesteps, 0),
                callback=CallbackList(callbacks),
                tb_log_name=TENSORBOARD_NAME,
                reset_num_timesteps=checkpoint is None,
            )
        except KeyboardInterrupt:
            if progress is not None and hasattr(progress, "pbar"):
                progress.pbar.close()
            result = TrainResult(run_dir, checkpoints.save(model), model.num_timesteps, None, None, fps(), interrupted=True)
        else:
            session_fps = fps()
            saved = checkpoints.save(model)  # before the final evaluation, which a Ctrl-C may interrupt
            last = evaluation.last_result
            if last is None or last["timesteps"] != model.num_timesteps:
                last = evaluation.evaluate()
            replace_atomically(saved, run_dir / FINAL_MODEL)
            result = TrainResult(
                run_dir, run_dir / FINAL_MODEL, model.num_timesteps, last["success_rate"], last["mean_reward"], session_fps
            )
    finally:
        # After Ctrl-C, SubprocVecEnv workers have stopped too and their pipes are closed.
        with contextlib.suppress(EOFError, ConnectionError):
            env.close()
        eval_env.close()
    print(_summary(agent.name, env_id, result, settings["eval_episodes"]))
    return result


def cli() -> int:
    """Console-script entry point: exit status 0, or 130 after Ctrl-C."""
    return 130 if main().interrupted else 0


if __name__ == "__main__":
    sys.exit(cli())
