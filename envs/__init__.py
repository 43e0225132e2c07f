"""Gymnasium tasks and wrappers for episodic-memory agents.

Nothing is registered on import: call :func:`register_envs` (idempotent) before ``gymnasium.make``, or use
:func:`make_env`, which registers and wraps in one go. Tasks live in one module each (:mod:`ebmm_rl.envs.memory`, the
MiniGrid Memory tasks; :mod:`ebmm_rl.envs.control`, classic control without velocities), MiniGrid's wrappers in
:mod:`ebmm_rl.envs.wrappers`.
"""

from ebmm_rl.envs.control import MaskVelocity, register_control_envs
from ebmm_rl.envs.memory import (
    DEFAULT_ENV_ID,
    ENV_ALIASES,
    CueStartMemoryEnv,
    NearStartMemoryEnv,
    register_memory_envs,
)
from ebmm_rl.envs.wrappers import (
    CueOracle,
    DropMission,
    NovelPoses,
    SymbolicImage,
    ThreeActions,
    make_env,
    pays_on_success,
    resolve_env_id,
)

__all__ = [
    "DEFAULT_ENV_ID",
    "ENV_ALIASES",
    "CueOracle",
    "CueStartMemoryEnv",
    "DropMission",
    "MaskVelocity",
    "NearStartMemoryEnv",
    "NovelPoses",
    "SymbolicImage",
    "ThreeActions",
    "make_env",
    "pays_on_success",
    "register_envs",
    "resolve_env_id",
]


def register_envs() -> tuple[str, ...]:
    """Register all of this package's env ids with gymnasium; safe to call many times.

    :return: the ids, whether registered by this call, an earlier one or (for part of the MiniGrid Memory family)
        minigrid itself.
    """
    return (*register_memory_envs(), *register_control_envs())
