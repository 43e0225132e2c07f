"""An RL run's envs and its saved model, built and loaded the same way by every command line."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecMonitor

from ebmm_rl import envs
from ebmm_rl.agents import Agent, get_agent
from ebmm_rl.runs.checkpoints import latest_checkpoint
from ebmm_rl.runs.config import load_yaml
from ebmm_rl.runs.directory import ARGS_FILE, CHECKPOINT_DIR, CONFIG_FILE, FINAL_MODEL

EVAL_SEED_OFFSET = 1_000_000
"""Evaluation envs are seeded with ``seed + EVAL_SEED_OFFSET``, so they never replay training episodes."""


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
    :param novel_poses: the envs report new poses (:class:`ebmm_rl.envs.NovelPoses`), for
        :class:`ebmm_rl.sb3.exploration.VecNoveltyBonus`.
    :return: the ``VecMonitor``-wrapped vector env.
    """
    env_fn = functools.partial(envs.make_env, env_id, novel_poses=novel_poses, **agent.env_options(config))
    vec_env_cls = {"dummy": DummyVecEnv, "subproc": SubprocVecEnv}[vec_env]
    vectorized = vec_env_cls([env_fn] * n_envs)
    vectorized.seed(seed)
    return VecMonitor(vectorized)


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


def load_run(run_dir: str | Path, device: str = "auto") -> tuple[Agent, dict[str, Any], dict[str, Any], BaseAlgorithm, Path]:
    """Load a run directory written by ``python -m ebmm_rl.train``.

    :param run_dir: the run directory.
    :param device: torch device for the model.
    :return: the agent, the run settings (``args.yml``), the config (``config.yml``), the model (its final model, or
        the latest checkpoint of an unfinished run) and the model's path.
    :raises FileNotFoundError: if the directory is not a run or holds no model.
    """
    run_dir = Path(run_dir)
    if not (run_dir / ARGS_FILE).is_file() or not (run_dir / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory of ebmm_rl.train (it needs {ARGS_FILE} and {CONFIG_FILE}).")
    settings = load_yaml(run_dir / ARGS_FILE)
    config = load_yaml(run_dir / CONFIG_FILE)
    agent = get_agent(settings["agent"])
    model_path = model_file(run_dir)
    return agent, settings, config, agent.algorithm.load(model_path, device=device), model_path
