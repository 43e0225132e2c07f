"""An RL run's envs and its saved model, built and loaded the same way by every command line."""

from __future__ import annotations

import functools
import pickle
from pathlib import Path
from typing import Any

from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecMonitor, VecNormalize
from stable_baselines3.common.vec_env.base_vec_env import VecEnvWrapper

from ebmm_rl import envs
from ebmm_rl.agents import Agent, get_agent
from ebmm_rl.runs.checkpoints import latest_checkpoint, normalization_file
from ebmm_rl.runs.config import load_yaml
from ebmm_rl.runs.directory import ARGS_FILE, CHECKPOINT_DIR, CONFIG_FILE, FINAL_MODEL
from ebmm_rl.sb3.window import VecEpisodicWindow

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
    :return: the vector env.
    """
    env_fn = functools.partial(envs.make_env, env_id, novel_poses=novel_poses, **agent.env_options(config))
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
