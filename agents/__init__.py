"""Agents: an SB3 algorithm, its policy and how its environment is wrapped, one module per agent.

Each module ``agents/<name>.py`` defines one :class:`Agent` named ``AGENT`` whose ``name`` is the module name, and
``configs/<name>.yml`` holds its hyperparameters (see :mod:`ebmm_rl.runs.config`). Adding an agent is exactly these two
files: :func:`agent_names` finds the module without importing it and :func:`get_agent` imports only the one asked for,
so an agent whose dependencies are missing does not break the others.

Built-in agents: ``ppo`` (memoryless), ``ppo_framestack`` (the last 4 observations), ``ppo_lstm`` (recurrent PPO),
``ppo_oracle`` (told the cue; benchmarks only).
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm

__all__ = ["Agent", "agent_names", "get_agent"]


@dataclass(frozen=True)
class Agent:
    """An algorithm, its policy and the wrapping of its env (:func:`ebmm_rl.envs.make_env` options).

    :param name: the agent's name on the command line; must equal its module's name.
    :param algorithm: the SB3 algorithm class (``PPO``, ``RecurrentPPO`` or a subclass). Its constructor's argument
        names are the keys its config accepts.
    :param policy: the default ``policy`` argument (a registered name like ``"MultiInputPolicy"`` or a dotted class path);
        a config may override it with ``policy: <name or dotted class path>``. ``None``: the algorithm's policy for the
        env's observation space, as an SB3 user picks it (:func:`ebmm_rl.runs.experiment.default_policy`: ``MlpPolicy``,
        ``CnnPolicy`` or ``MultiInputPolicy``, and their ``Lstm`` forms).
    :param description: one line for ``--help``.
    :param window: if set, the agent sees a :class:`ebmm_rl.sb3.VecEpisodicWindow` of this many observations by default,
        and its config accepts the run-level key ``window`` to change it. ``None``: no window, and ``window`` is not a
        valid key.
    :param oracle: wrap the env in :class:`ebmm_rl.envs.CueOracle` (the cue's identity in the observation; benchmarks only).
    """

    name: str
    algorithm: type[BaseAlgorithm]
    policy: str | None
    description: str
    window: int | None = None
    oracle: bool = False

    def __post_init__(self) -> None:
        if self.window is not None and self.window < 1:
            raise ValueError(f"Agent {self.name!r}: window must be None (no window) or >= 1, got {self.window}.")

    @property
    def run_defaults(self) -> dict[str, Any]:
        """Run-level config keys this agent adds to the common ones (``n_envs``, ``n_timesteps``, ``env_kwargs``),
        with their defaults."""
        return {} if self.window is None else {"window": self.window}

    def env_options(self, config: dict[str, Any]) -> dict[str, Any]:
        """Keyword arguments of :func:`ebmm_rl.envs.make_env` for this agent under a resolved config.

        :param config: a config from :func:`ebmm_rl.runs.config.load_config` (``env_kwargs`` is read).
        :return: ``oracle`` and the config's ``env_kwargs`` (e.g. ``agent_view_size``, ``three_actions``).
        """
        return {"oracle": self.oracle, **config.get("env_kwargs", {})}


def agent_names() -> list[str]:
    """Names of all agents (modules of this package), without importing them.

    :return: the sorted names.
    """
    return sorted(module.name for module in pkgutil.iter_modules(__path__) if not module.name.startswith("_"))


def get_agent(name: str) -> Agent:
    """Import ``ebmm_rl.agents.<name>`` and return its ``AGENT``.

    :param name: an agent name (see :func:`agent_names`).
    :return: the agent.
    :raises ValueError: for an unknown name, with the closest names as suggestions.
    """
    names = agent_names()
    if name not in names:
        suggestions = difflib.get_close_matches(name, names, n=3)
        hint = f"did you mean {' or '.join(repr(s) for s in suggestions)}? " if suggestions else ""
        raise ValueError(f"Unknown agent {name!r}: {hint}Available agents: {', '.join(names)}.")
    module = importlib.import_module(f"{__name__}.{name}")
    agent = getattr(module, "AGENT", None)
    if not isinstance(agent, Agent) or agent.name != name:
        raise TypeError(
            f"Module {module.__name__} must define AGENT = Agent(name={name!r}, ...), found {agent!r}; "
            "see the agents package docstring."
        )
    return agent
