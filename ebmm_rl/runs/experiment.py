"""An RL run's envs and its saved model, built and loaded the same way by every command line."""

from __future__ import annotations

import functools
import pickle
import sys
from pathlib import Path
from typing import Any

from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecMonitor, VecNormalize
from stable_baselines3.common.vec_env.base_vec_env import VecEnvWrapper

from ebmm_rl import envs
from ebmm_rl.agents import Agent, get_agent
from ebmm_rl.runs.checkpoints import (
    CheckpointError,
    ResumableEnv,
    list_checkpoints,
    load_first_readable,
    normalization_file,
)
from ebmm_rl.runs.config import load_yaml
from ebmm_rl.runs.directory import ARGS_FILE, BEST_MODEL, CHECKPOINT_DIR, CONFIG_FILE, FINAL_MODEL
from ebmm_rl.sb3.window import VecEpisodicWindow

EVAL_SEED_OFFSET = 1_000_000
"""Evaluation envs are seeded with ``seed + EVAL_SEED_OFFSET``, so they never replay training episodes."""
MODEL_CHOICES = {
    "best": f"{BEST_MODEL}: the best evaluation of the stage the run reached",
    "final": f"{FINAL_MODEL}: the model at the end of training",
    "latest": "the newest checkpoint (of a run still training or stopped)",
}
"""Which of a run's models :func:`load_run` loads; each falls back to the run's newer models after it."""


def make_resumable_env(env_id: str, **kwargs: Any) -> ResumableEnv:
    """:func:`ebmm_rl.envs.make_env` in a :class:`~ebmm_rl.runs.checkpoints.ResumableEnv`, whose state a checkpoint
    holds."""
    return ResumableEnv(envs.make_env(env_id, **kwargs))


def make_vec_env(
    agent: Agent,
    env_id: str,
    config: dict[str, Any],
    n_envs: int,
    seed: int,
    vec_env: str = "dummy",
    novel_poses: bool = False,
    training: bool = True,
) -> VecEnv:
    """Vectorised, monitored envs wrapped the agent's way: ``VecMonitor``, then ``VecNormalize`` if the config asks
    (``normalize``), then :class:`~ebmm_rl.sb3.window.VecEpisodicWindow` if the agent has a window.

    :param agent: the agent (its window and oracle options).
    :param env_id: a registered env id or alias.
    :param config: a resolved config (``window``, ``env_kwargs``, ``normalize``, ``gamma``).
    :param n_envs: number of envs.
    :param seed: env ``i`` is seeded with ``seed + i`` at its first reset.
    :param vec_env: ``"dummy"`` (one process) or ``"subproc"`` (one process per env).
    :param novel_poses: the envs report new poses (:class:`ebmm_rl.envs.NovelPoses`), for
        :class:`ebmm_rl.sb3.exploration.VecNoveltyBonus`.
    :param training: training envs update the ``VecNormalize`` statistics and normalise rewards; evaluation envs
        (False) use the statistics they are given (``sync_envs_normalization``, :func:`load_normalization`) and report
        the task's own rewards.
    :return: the vector env (each env a :class:`~ebmm_rl.runs.checkpoints.ResumableEnv`).
    """
    env_fn = functools.partial(make_resumable_env, env_id, novel_poses=novel_poses, **agent.env_options(config))
    vec_env_cls = {"dummy": DummyVecEnv, "subproc": SubprocVecEnv}[vec_env]
    vectorized = vec_env_cls([env_fn] * n_envs)
    vectorized.seed(seed)
    wrapped: VecEnv = VecMonitor(vectorized)
    normalize = config.get("normalize")
    if normalize:
        # As rl-zoo: its own keyword arguments, else normalise both, with the algorithm's discount for the returns.
        kwargs = {"gamma": config.get("gamma", 0.99), **(normalize if isinstance(normalize, dict) else {})}
        if not training:
            kwargs.update(training=False, norm_reward=False)
        wrapped = VecNormalize(wrapped, **kwargs)
    if config.get("window"):
        wrapped = VecEpisodicWindow(wrapped, window=config["window"])
    return wrapped


def default_policy(algorithm: type[BaseAlgorithm], observation_space: spaces.Space) -> str:
    """The registered policy an SB3 user picks for an observation space: ``MultiInput*`` for a Dict, ``Cnn*`` for an
    image, ``Mlp*`` otherwise, among the algorithm's ``policy_aliases`` (``MlpPolicy``, ``MlpLstmPolicy``, ...).

    :raises ValueError: the algorithm registers no such policy
    """
    if isinstance(observation_space, spaces.Dict):
        prefix = "MultiInput"
    elif is_image_space(observation_space, check_channels=False):
        prefix = "Cnn"
    else:
        prefix = "Mlp"
    names = [name for name in algorithm.policy_aliases if name.startswith(prefix)]
    if len(names) != 1:
        raise ValueError(
            f"{algorithm.__name__} registers {names or 'no'} {prefix} policies for {observation_space}; set the config key "
            "policy to a registered name or a dotted class path."
        )
    return names[0]


def observation_space(agent: Agent, env_id: str, config: dict[str, Any]) -> spaces.Space:
    """The observation space a run's model gets: that of one env wrapped as :func:`make_vec_env` wraps it."""
    env = make_vec_env(agent, env_id, config, 1, 0)
    try:
        return env.observation_space
    finally:
        env.close()


def make_model(agent: Agent, env: VecEnv, algorithm_kwargs: dict[str, Any], **kwargs: Any) -> BaseAlgorithm:
    """A new model of an agent on an env, its policy :func:`default_policy` unless the config names one.

    :param algorithm_kwargs: from :func:`ebmm_rl.runs.config.split_config`
    :param kwargs: more constructor arguments (``seed``, ``device``, ``tensorboard_log``...)
    """
    policy = algorithm_kwargs.get("policy") or default_policy(agent.algorithm, env.observation_space)
    return agent.algorithm(env=env, **{**algorithm_kwargs, "policy": policy}, **kwargs)


def load_normalization(env: VecEnv, model_path: str | Path) -> None:
    """Give the ``VecNormalize`` of an env the statistics saved with a model, if the env normalises.

    :raises FileNotFoundError: the env normalises and the model has no statistics beside it
    """
    wrapper: Any = env
    while isinstance(wrapper, VecEnvWrapper) and not isinstance(wrapper, VecNormalize):
        wrapper = wrapper.venv
    if not isinstance(wrapper, VecNormalize):
        return
    path = normalization_file(model_path)
    if not path.is_file():
        raise FileNotFoundError(f"The config normalises observations, but {path}, the statistics of {model_path}, is missing.")
    with open(path, "rb") as file:
        saved: VecNormalize = pickle.load(file)
    wrapper.obs_rms, wrapper.ret_rms = saved.obs_rms, saved.ret_rms


def model_candidates(path: str | Path, model: str = "final") -> list[Path]:
    """The model files of a run, preferred first: a ``.zip`` as is; in a run directory the model asked for (``best``:
    ``best_model.zip``, ``final``: ``final_model.zip``, ``latest``: the newest checkpoint), then the final model and
    the checkpoints, newest first (an evaluation falls back to the next when one is missing or damaged).

    :param path: a model file or a run directory.
    :param model: one of :data:`MODEL_CHOICES`.
    :return: the files; empty if there is none.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if model not in MODEL_CHOICES:
        raise ValueError(f"model {model!r}: expected one of {', '.join(MODEL_CHOICES)}")
    named = {"best": [path / BEST_MODEL], "final": [], "latest": list_checkpoints(path / CHECKPOINT_DIR)[:1]}[model]
    candidates = [*named, path / FINAL_MODEL, *list_checkpoints(path / CHECKPOINT_DIR)]
    return [candidate for candidate in dict.fromkeys(candidates) if candidate.is_file()]


def load_run(
    run_dir: str | Path, device: str = "auto", model: str = "final"
) -> tuple[Agent, dict[str, Any], dict[str, Any], BaseAlgorithm, Path]:
    """Load a run directory written by ``python -m ebmm_rl.train``.

    :param run_dir: the run directory.
    :param device: torch device for the model.
    :param model: which model (:data:`MODEL_CHOICES`); a run without it (no evaluation yet, unfinished) or with it
        damaged gives its final model or newest checkpoint instead, saying so on stderr.
    :return: the agent, the run settings (``args.yml``), the config (``config.yml``), the model and the model's path.
    :raises FileNotFoundError: if the directory is not a run or holds no model.
    :raises CheckpointError: if no model of the run can be loaded (naming each file and its problem).
    """
    run_dir = Path(run_dir)
    if not (run_dir / ARGS_FILE).is_file() or not (run_dir / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory of ebmm_rl.train (it needs {ARGS_FILE} and {CONFIG_FILE}).")
    settings = load_yaml(run_dir / ARGS_FILE)
    config = load_yaml(run_dir / CONFIG_FILE)
    agent = get_agent(settings["agent"])
    candidates = model_candidates(run_dir, model)
    if not candidates:
        raise FileNotFoundError(f"{run_dir} holds neither {FINAL_MODEL} nor a checkpoint.")
    wanted = {"best": run_dir / BEST_MODEL, "final": run_dir / FINAL_MODEL}.get(model, candidates[0])

    def load(path: Path) -> BaseAlgorithm:
        try:
            return agent.algorithm.load(path, device=device)
        except Exception as error:  # whatever keeps a model from loading makes it one to skip
            raise CheckpointError(
                f"{path} cannot be loaded ({type(error).__name__}: {' '.join(str(error).split())})"
            ) from error

    loaded, path = load_first_readable(candidates, load)
    if path != wanted:
        print(f"Evaluating {path} instead of {wanted}", file=sys.stderr)
    return agent, settings, config, loaded, path
