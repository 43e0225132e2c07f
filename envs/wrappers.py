"""Wrappers that turn MiniGrid Memory tasks into SB3-ready environments, one transform per class, and :func:`make_env`.

:func:`make_env` applies them to MiniGrid envs in this order: ``DropMission`` -> ``SymbolicImage`` -> ``ThreeActions``
(optional) -> ``CueOracle`` (optional) -> ``NovelPoses`` (optional); any other env it returns as ``gymnasium.make`` does.
Every wrapper records its constructor arguments, so ``env.spec`` can rebuild the whole stack. The episode's window of
observations is a VecEnv wrapper (:class:`ebmm_rl.sb3.window.VecEpisodicWindow`), as SB3 stacks frames.
"""

from __future__ import annotations

import difflib
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import RecordConstructorArgs
from minigrid.core.actions import Actions
from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX, STATE_TO_IDX
from minigrid.envs import MemoryEnv
from minigrid.minigrid_env import MiniGridEnv

from ebmm_rl.envs.control import register_control_envs
from ebmm_rl.envs.memory import CUE_OBJECT_TYPES, ENV_ALIASES, cue_position, register_memory_envs

CUE_UNKNOWN = 0
"""``cue`` value of :class:`CueOracle` before the cue has been in view; ``1 + CUE_OBJECT_TYPES.index(type)`` after."""


def _dict_space(env: gym.Env, wrapper_name: str) -> spaces.Dict:
    if not isinstance(env.observation_space, spaces.Dict):
        raise TypeError(
            f"{wrapper_name} needs a Dict observation space (MiniGrid's), got {env.observation_space}; "
            "apply it to a MiniGrid env before wrappers that flatten or replace the observation."
        )
    return env.observation_space


class DropMission(gym.ObservationWrapper, RecordConstructorArgs):
    """Remove the ``mission`` text from MiniGrid's dict observation (SB3 cannot encode Text spaces).

    Observation: MiniGrid's dict without ``mission``, i.e. ``image`` uint8 ``[H, W, 3]`` and ``direction``
    Discrete(4).

    :param env: a MiniGrid env with a dict observation holding ``mission``.
    """

    def __init__(self, env: gym.Env):
        RecordConstructorArgs.__init__(self)
        gym.ObservationWrapper.__init__(self, env)
        observation_space = _dict_space(env, "DropMission")
        if "mission" not in observation_space.spaces:
            raise KeyError(f"DropMission found no 'mission' key in {observation_space}; it is already dropped.")
        self.observation_space = spaces.Dict(
            {key: space for key, space in observation_space.spaces.items() if key != "mission"}
        )

    def observation(self, observation: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in observation.items() if key != "mission"}


class SymbolicImage(gym.ObservationWrapper, RecordConstructorArgs):
    """Declare ``image`` as MiniGrid's symbolic (object, colour, state) encoding with its true bounds.

    MiniGrid declares the image as ``Box(0, 255, uint8)``, which SB3 takes for pixels: its ``MultiInputPolicy`` then
    divides it by 255 and feeds it to ``NatureCNN``, whose 8x8 kernel does not fit a 7x7 or 3x3 view. With the upper
    bounds set to the largest object, colour and state indices SB3 flattens the image instead. The values are
    unchanged.

    Observation: as the input, with ``image`` ``Box(0, [max object, max colour, max state], [H, W, 3], uint8)``.

    :param env: an env with a dict observation holding a MiniGrid ``image``.
    """

    def __init__(self, env: gym.Env):
        RecordConstructorArgs.__init__(self)
        gym.ObservationWrapper.__init__(self, env)
        observation_space = _dict_space(env, "SymbolicImage")
        image_space = observation_space["image"]
        channel_high = np.array(
            [max(OBJECT_TO_IDX.values()), max(COLOR_TO_IDX.values()), max(STATE_TO_IDX.values())], dtype=np.uint8
        )
        self.observation_space = spaces.Dict(
            {
                **observation_space.spaces,
                "image": spaces.Box(low=0, high=np.broadcast_to(channel_high, image_space.shape).copy(), dtype=np.uint8),
            }
        )

    def observation(self, observation: dict[str, Any]) -> dict[str, Any]:
        return observation


class ThreeActions(gym.ActionWrapper, RecordConstructorArgs):
    """Restrict MiniGrid's actions to Discrete(3): 0 turn left, 1 turn right, 2 forward (all a Memory task needs).

    :param env: a MiniGrid env (its actions 0, 1, 2 are left, right, forward).
    """

    def __init__(self, env: gym.Env):
        RecordConstructorArgs.__init__(self)
        gym.ActionWrapper.__init__(self, env)
        if not isinstance(env.action_space, spaces.Discrete) or env.action_space.n <= Actions.forward:
            raise TypeError(f"ThreeActions needs MiniGrid's Discrete(7) action space, got {env.action_space}.")
        self.action_space = spaces.Discrete(3)

    def action(self, action: int) -> int:
        # MiniGrid's left, right and forward are its actions 0, 1 and 2, so the index passes through.
        return int(action)


class CueOracle(gym.Wrapper, RecordConstructorArgs):
    """Tell the agent the cue's identity once the cue has been in its view (for benchmarks only: this is the memory).

    The cue is the object in the start room (:func:`ebmm_rl.envs.memory.cue_position`); the matching choice object has its
    type. "In view" means visible in the agent's observation (within the view and not occluded), checked with
    MiniGrid's ``agent_sees`` after reset and after every step. Once seen, the identity stays for the episode.

    Observation: the input dict plus ``cue`` Discrete(3): 0 not seen yet this episode, 1 key, 2 ball
    (``1 + CUE_OBJECT_TYPES.index(cue type)``).

    :param env: a (wrapped) MiniGrid Memory env with a dict observation.
    """

    def __init__(self, env: gym.Env):
        RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)
        if not isinstance(env.unwrapped, MemoryEnv):
            raise TypeError(
                f"CueOracle works on MiniGrid Memory tasks (minigrid.envs.MemoryEnv), got {type(env.unwrapped)}; "
                "use one of the MiniGrid-Memory* or EBMM-Memory* ids."
            )
        self.observation_space = spaces.Dict(
            {**_dict_space(env, "CueOracle").spaces, "cue": spaces.Discrete(1 + len(CUE_OBJECT_TYPES))}
        )
        self._cue = CUE_UNKNOWN

    def _update_cue(self, observation: dict[str, Any]) -> dict[str, Any]:
        memory_env: MemoryEnv = self.env.unwrapped
        if self._cue == CUE_UNKNOWN:
            cue_x, cue_y = cue_position(memory_env)
            if memory_env.agent_sees(cue_x, cue_y):
                self._cue = 1 + CUE_OBJECT_TYPES.index(memory_env.grid.get(cue_x, cue_y).type)
        return {**observation, "cue": self._cue}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        observation, info = self.env.reset(seed=seed, options=options)
        self._cue = CUE_UNKNOWN
        return self._update_cue(observation), info

    def step(self, action: Any) -> tuple[dict[str, Any], SupportsFloat, bool, bool, dict[str, Any]]:
        observation, reward, terminated, truncated, info = self.env.step(action)
        return self._update_cue(observation), reward, terminated, truncated, info


class NovelPoses(gym.Wrapper, RecordConstructorArgs):
    """Say in ``info["novel_pose"]`` whether a step reached a pose (position and direction) that the agent has not
    been in before in this episode; observations and rewards are unchanged.

    The signal of an episodic exploration bonus (:class:`ebmm_rl.sb3.exploration.VecNoveltyBonus` adds it to the training
    reward): in ``MiniGrid-Memory-v0`` the agent starts facing away from the cue, and a policy that has learned to walk
    straight to the choice never turns back to look unless something pays for new poses. Turning in place and walking
    into a wall repeat poses, so they earn nothing.

    :param env: a (wrapped) MiniGrid env (its ``unwrapped`` has ``agent_pos`` and ``agent_dir``).
    """

    def __init__(self, env: gym.Env):
        RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)
        if not hasattr(env.unwrapped, "agent_pos") or not hasattr(env.unwrapped, "agent_dir"):
            raise TypeError(f"NovelPoses needs a MiniGrid env (agent_pos, agent_dir), got {type(env.unwrapped)}.")
        self._poses: set[tuple[int, int, int]] = set()

    def _visit(self) -> bool:
        """Record the current pose; True if it is new in this episode."""
        grid_env = self.env.unwrapped
        pose = (int(grid_env.agent_pos[0]), int(grid_env.agent_pos[1]), int(grid_env.agent_dir))
        novel = pose not in self._poses
        self._poses.add(pose)
        return novel

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        observation, info = self.env.reset(seed=seed, options=options)
        self._poses.clear()
        self._visit()  # the start pose is not new to the agent after the first step
        return observation, info

    def step(self, action: Any) -> tuple[dict[str, Any], SupportsFloat, bool, bool, dict[str, Any]]:
        observation, reward, terminated, truncated, info = self.env.step(action)
        return observation, reward, terminated, truncated, {**info, "novel_pose": self._visit()}


def resolve_env_id(name: str) -> str:
    """Map a command-line env name to a registered gymnasium id.

    Registered ids map to themselves; aliases (:data:`ebmm_rl.envs.memory.ENV_ALIASES`, e.g. ``MiniGrid-Memory`` ->
    ``MiniGrid-Memory-v0``) to their id. Registers the package's envs first.

    :param name: a registered id or an alias.
    :return: the registered id.
    :raises ValueError: for an unknown name, with the closest ids and aliases as suggestions.
    """
    register_memory_envs()
    register_control_envs()
    if name in gym.registry:
        return name
    if name in ENV_ALIASES:
        return ENV_ALIASES[name]
    suggestions = difflib.get_close_matches(name, [*gym.registry, *ENV_ALIASES], n=3)
    hint = f"did you mean {' or '.join(repr(s) for s in suggestions)}?" if suggestions else "no close match."
    raise ValueError(
        f"Unknown env id {name!r}: {hint} Use a registered gymnasium id (list them with gymnasium.pprint_registry()) "
        "or an alias from ebmm_rl.envs.ENV_ALIASES."
    )


def pays_on_success(env_id: str) -> bool:
    """Whether an env's episode return is > 0 exactly when the episode succeeds, so that the success rate is the
    fraction of returns > 0: MiniGrid envs (they pay ``1 - 0.9 * steps / max_steps`` on success, 0 otherwise). Other
    envs (CartPole, Pendulum...) have no success, only a return.

    :param env_id: a registered id or an alias.
    """
    env = gym.make(resolve_env_id(env_id))
    try:
        return isinstance(env.unwrapped, MiniGridEnv)
    finally:
        env.close()


def make_env(
    env_id: str,
    *,
    three_actions: bool | None = None,
    oracle: bool = False,
    novel_poses: bool = False,
    **env_kwargs: Any,
) -> gym.Env:
    """Make an env ready for SB3: ``gymnasium.make`` of any registered id, and for a MiniGrid env its wrappers.

    A MiniGrid env always gets :class:`DropMission` and :class:`SymbolicImage`; the options add the other MiniGrid
    wrappers in the order ``ThreeActions``, ``CueOracle``, ``NovelPoses``. Any other env is returned as made.

    :param env_id: a registered id or an alias (see :func:`resolve_env_id`).
    :param three_actions: restrict MiniGrid's actions to left, right, forward (:class:`ThreeActions`); ``None``: yes
        for a MiniGrid env.
    :param oracle: add the cue identity (:class:`CueOracle`; benchmarks only, Memory tasks only).
    :param novel_poses: report new poses in ``info["novel_pose"]`` (:class:`NovelPoses`; for an exploration bonus).
    :param env_kwargs: passed to ``gymnasium.make`` (e.g. ``agent_view_size=3``, ``render_mode="rgb_array"``).
    :return: the wrapped env.
    :raises TypeError: a MiniGrid option on an env that is not MiniGrid.
    """
    env = gym.make(resolve_env_id(env_id), **env_kwargs)
    if not isinstance(env.unwrapped, MiniGridEnv):
        asked = [
            name
            for name, value in (("three_actions", three_actions), ("oracle", oracle), ("novel_poses", novel_poses))
            if value
        ]
        if asked:
            env.close()
            raise TypeError(f"{', '.join(asked)} work on MiniGrid envs only, and {env_id} is not one; leave them out.")
        return env
    env = SymbolicImage(DropMission(env))
    if three_actions is None or three_actions:
        env = ThreeActions(env)
    if oracle:
        env = CueOracle(env)
    if novel_poses:
        env = NovelPoses(env)
    return env
