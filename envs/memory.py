"""MiniGrid Memory tasks: remember a cue object and pick its match at the end of a hallway.

## Description

The agent starts in a small room holding a cue object (a green key or a green ball) at cell ``(1, height // 2 - 1)``.
A hallway leads east to a vertical junction with one object at each end; one of them has the cue's type. Stepping
next to the matching object is a success, stepping next to the other one a failure. Once the agent has left the start
room the cue is out of view, so an agent that cannot remember what it saw succeeds about half the time.

Two layouts are used:

- minigrid's :class:`~minigrid.envs.MemoryEnv` (square ``size x size`` grid; the agent starts facing east at a
  random cell of the row ``height // 2`` between the start room and the junction, so the cue is usually behind it and
  it has to turn around to see it);
- :class:`NearStartMemoryEnv` (this module): MemoryEnv whose agent starts at most ``max_start_distance`` cells east of
  the cue's column, for a start-state curriculum;
- :class:`CueStartMemoryEnv` (this module): a ``(corridor_length + 7) x 7`` grid where the agent starts in the start
  room facing the cue, so the cue is in view in the first observation and the delay between cue and choice is set by
  ``corridor_length``.

How much memory a task needs depends on ``agent_view_size`` (odd, >= 3, default 7), which every id accepts as a
keyword, e.g. ``gymnasium.make("MiniGrid-MemoryS13-v0", agent_view_size=3)``. With the default 7x7 view, S7 and S9 can
be solved without memory (some cells show the cue and a choice object at once); from S11 on, or with a 3x3 view at any
size, no cell shows both and a memoryless agent is at about 50% success.

## Observation

MiniGrid's dict: ``image`` uint8 ``[agent_view_size, agent_view_size, 3]`` (object, colour, state per cell of the
egocentric view), ``direction`` Discrete(4) (0 east, 1 south, 2 west, 3 north) and ``mission`` (a constant text;
drop it with :class:`ebmm_rl.envs.wrappers.DropMission` for SB3).

## Actions

Discrete(7) as in MiniGrid; only 0 (turn left), 1 (turn right) and 2 (forward) matter
(:class:`ebmm_rl.envs.wrappers.ThreeActions` restricts the space to them). ``pickup`` acts as ``toggle``, which does nothing
here.

## Rewards

``1 - 0.9 * step_count / max_steps`` on success, 0 on failure or timeout.

## Termination

The episode terminates when the agent steps next to either choice object (at ``success_pos`` or ``failure_pos``) and
is truncated after ``max_steps`` steps.

## Registered ids

``register_memory_envs()`` (called by :func:`ebmm_rl.envs.register_envs`) makes sure all of these exist:

- ``MiniGrid-MemoryS{7,9,11,13,15,17}-v0`` and ``MiniGrid-MemoryS{7,9,11,13,15,17}Random-v0``: minigrid's MemoryEnv
  with ``size`` S (``Random``: random hallway length). minigrid registers S7, S9, S11, S13, S13Random and S17Random
  itself; the other six are registered here with the same entry point and naming.
- ``MiniGrid-Memory-v0`` (CLI alias ``MiniGrid-Memory``, :data:`DEFAULT_ENV_ID`): the default memory task, MemoryEnv
  S13 with the 7x7 view: the smallest fixed-length layout where a memoryless agent is at chance with MiniGrid's
  default view.
- ``EBMM-MemoryS7View3-v0``: MemoryEnv S7 with a 3x3 view; a small grid that still needs memory.
- ``EBMM-MemoryShort-v0``: :class:`CueStartMemoryEnv` with ``corridor_length=0`` (7x7 grid), a 3x3 view and
  ``max_steps=56``. The cue is in view at reset and the shortest solution takes 7 steps, so credit assignment is easy;
  meant for fast experiments and for the agent benchmark (a PPO agent told the cue by
  :class:`ebmm_rl.envs.wrappers.CueOracle` should reach >= 95% success within about 1M steps).
- ``EBMM-MemoryTMaze-v0``: ``EBMM-MemoryShort-v0`` with ``fixed_layout=True`` (key always north, ball always south):
  the cue alone says which way to turn at the junction, so the choice needs no comparison of the cue with the objects.
  The agent benchmark's task: PPO told the cue (:class:`ebmm_rl.envs.wrappers.CueOracle`) solves it within about 30k steps,
  a memoryless agent stays at 50%.
- ``EBMM-MemoryS13TMaze-v0``: ``EBMM-MemoryTMaze-v0`` at the size of ``MiniGrid-Memory-v0`` with MiniGrid's 7x7
  view (``corridor_length=6``: 13x7 grid; key always north) and S13's ``max_steps=845``, long enough for random
  actions to find the junction (at 8 times the shortest solution, 104, one PPO seed in four never got there in 240k
  steps). The agent starts facing the cue; from the hallway and the junction the cue is out of view, and the shortest
  solution takes 13 steps. It keeps S13's memory demand without its exploration problem: in ``MiniGrid-Memory-v0``
  the agent starts anywhere in the hallway facing east, away from the cue, and must learn to turn back and look
  first, which PPO told the cue (:class:`ebmm_rl.envs.wrappers.CueOracle`) did not learn: it went straight to the junction
  (0.42-0.62 success in every evaluation up to 1.5M steps, also with ten times the entropy bonus).
- ``EBMM-MemoryS13Near-v0``: ``MiniGrid-Memory-v0`` whose agent starts in the start room
  (:class:`NearStartMemoryEnv` with ``max_start_distance=2``): one turn, or none, shows the cue. Widen the start with
  ``gymnasium.make("EBMM-MemoryS13Near-v0", max_start_distance=5)``; 9 is ``MiniGrid-Memory-v0``'s whole hallway.
- ``EBMM-MemoryLong-v0``: :class:`CueStartMemoryEnv` with ``corridor_length=200`` and a 3x3 view: at least 204 steps
  between seeing the cue and reaching the junction. Set the delay with ``gymnasium.make("EBMM-MemoryLong-v0",
  corridor_length=...)``. Reward comes only at the junction, so random exploration of the hallway rarely gets there.
- ``EBMM-MemoryDelay-v0``: the long-horizon T-maze. The same layout with ``conveyor=True`` and ``fixed_layout=True``:
  in the hallway every action carries the agent one cell east, so every episode spends exactly ``corridor_length + 1``
  (201) steps there, seeing the same walls, between the cue and the junction; and the key is always north, the ball
  always south, so the cue alone says which way to turn (a T-maze with a long corridor, as in Bakker, NeurIPS 2001).
  The delay is certain and costs no exploration, and the choice needs no look at the objects: the task isolates
  carrying one bit over hundreds of steps (without it: 50%). The shortest solution takes 207 steps and ``max_steps``
  is 414, twice that; ``corridor_length=`` sets the delay.

Every registered id also has a version-less CLI alias (``EBMM-MemoryShort`` -> ``EBMM-MemoryShort-v0``), see
:data:`ENV_ALIASES`.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from minigrid.core.actions import Actions
from minigrid.core.mission import MissionSpace
from minigrid.core.world_object import Ball, Key
from minigrid.envs import MemoryEnv
from minigrid.minigrid_env import MiniGridEnv

DEFAULT_ENV_ID = "MiniGrid-Memory-v0"
"""The memory task used when a command line says only ``MiniGrid-Memory``."""

MINIGRID_MEMORY_SIZES = (7, 9, 11, 13, 15, 17)
"""Grid sizes of the ``MiniGrid-MemoryS{size}[Random]-v0`` family."""

CUE_OBJECT_TYPES = ("key", "ball")
"""MiniGrid object types the cue (and the choice objects) can have."""

CUE_START_HEIGHT = 7
"""Grid height of :class:`CueStartMemoryEnv`: the smallest height MemoryEnv's layout fits in."""

MEMORY_ENTRY_POINT = "minigrid.envs:MemoryEnv"
CUE_START_ENTRY_POINT = "ebmm_rl.envs.memory:CueStartMemoryEnv"
NEAR_START_ENTRY_POINT = "ebmm_rl.envs.memory:NearStartMemoryEnv"

# id -> (entry point, keyword arguments). The MiniGrid family entries that minigrid already registers are skipped at
# registration time, so their definitions stay minigrid's.
MEMORY_ENV_SPECS: dict[str, tuple[str, dict[str, Any]]] = {
    **{
        f"MiniGrid-MemoryS{size}{suffix}-v0": (MEMORY_ENTRY_POINT, {"size": size, "random_length": random_length})
        for size in MINIGRID_MEMORY_SIZES
        for suffix, random_length in (("", False), ("Random", True))
    },
    DEFAULT_ENV_ID: (MEMORY_ENTRY_POINT, {"size": 13}),
    "EBMM-MemoryS7View3-v0": (MEMORY_ENTRY_POINT, {"size": 7, "agent_view_size": 3}),
    "EBMM-MemoryShort-v0": (CUE_START_ENTRY_POINT, {"corridor_length": 0, "agent_view_size": 3, "max_steps": 56}),
    "EBMM-MemoryTMaze-v0": (
        CUE_START_ENTRY_POINT,
        {"corridor_length": 0, "agent_view_size": 3, "fixed_layout": True, "max_steps": 56},
    ),
    "EBMM-MemoryS13TMaze-v0": (CUE_START_ENTRY_POINT, {"corridor_length": 6, "fixed_layout": True, "max_steps": 845}),
    "EBMM-MemoryS13Near-v0": (NEAR_START_ENTRY_POINT, {"size": 13, "max_start_distance": 2}),
    "EBMM-MemoryLong-v0": (CUE_START_ENTRY_POINT, {"corridor_length": 200, "agent_view_size": 3}),
    "EBMM-MemoryDelay-v0": (
        CUE_START_ENTRY_POINT,
        {"corridor_length": 200, "agent_view_size": 3, "conveyor": True, "fixed_layout": True, "max_steps": 414},
    ),
}

ENV_ALIASES: dict[str, str] = {env_id.removesuffix("-v0"): env_id for env_id in MEMORY_ENV_SPECS}
"""Names accepted by :func:`ebmm_rl.envs.resolve_env_id` besides registered ids: each id without its ``-v0`` suffix."""


def register_memory_envs() -> tuple[str, ...]:
    """Register every id of :data:`MEMORY_ENV_SPECS` that gymnasium does not know yet; safe to call many times.

    :return: all Memory task ids, registered now or before.
    """
    for env_id, (entry_point, kwargs) in MEMORY_ENV_SPECS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, kwargs=kwargs)
    return tuple(MEMORY_ENV_SPECS)


def cue_position(env: MemoryEnv) -> tuple[int, int]:
    """Grid cell of the cue object in the start room, where ``MemoryEnv._gen_grid`` puts it.

    :param env: an unwrapped MemoryEnv (or subclass) after ``reset``.
    :return: ``(x, y)`` grid coordinates.
    """
    return 1, env.height // 2 - 1


class CueStartMemoryEnv(MemoryEnv):
    """MemoryEnv on a 7-high grid whose agent starts in the start room facing the cue, with a hallway of any length.

    The layout is MemoryEnv's with a fixed hallway: start room ``x = 1..3``, hallway ``x = 4..corridor_length + 4``
    along row 3, junction at ``x = corridor_length + 5`` with the choice objects at rows 1 and 5. The agent starts at
    ``(1, 3)`` facing north, with the cue at ``(1, 2)`` right in front of it. The shortest solution (turn right, walk
    ``corridor_length + 4`` cells, turn towards the match, step) takes ``corridor_length + 7`` steps.

    :param corridor_length: hallway cells added between the start room and the junction; the delay between seeing the
        cue and choosing grows one step per cell. 0 gives a 7x7 grid.
    :param max_steps: episode length limit; ``None`` gives 8 times the shortest solution, so random exploration ends
        quickly on short corridors.
    :param conveyor: in the hallway (``x = 4..corridor_length + 4`` of the middle row) every action turns the agent
        east and moves it one cell forward, so the hallway takes exactly ``corridor_length + 1`` steps whatever the
        policy does: a fixed delay between cue and choice that needs no exploration.
    :param fixed_layout: put the key at the north end of the junction and the ball at the south end in every episode
        (MemoryEnv shuffles them), so that the cue alone says which way to turn.
    :param kwargs: passed to :class:`~minigrid.minigrid_env.MiniGridEnv` (``agent_view_size``, ``render_mode``, ...).
    """

    def __init__(
        self,
        corridor_length: int = 0,
        max_steps: int | None = None,
        conveyor: bool = False,
        fixed_layout: bool = False,
        **kwargs: Any,
    ):
        if corridor_length < 0:
            raise ValueError(f"corridor_length must be >= 0 (0 gives a 7x7 grid), got {corridor_length}")
        self.corridor_length = corridor_length
        self.conveyor = conveyor
        self.fixed_layout = fixed_layout
        self.size = corridor_length + CUE_START_HEIGHT
        self.random_length = False
        if max_steps is None:
            max_steps = 8 * self.shortest_solution_length
        # MiniGridEnv.__init__ directly: MemoryEnv.__init__ ties the width to the height (a square grid).
        MiniGridEnv.__init__(
            self,
            mission_space=MissionSpace(mission_func=self._gen_mission),
            width=self.size,
            height=CUE_START_HEIGHT,
            see_through_walls=False,
            max_steps=max_steps,
            **kwargs,
        )

    @property
    def shortest_solution_length(self) -> int:
        """Number of steps of the fastest successful episode."""
        return self.corridor_length + 7

    def _gen_grid(self, width: int, height: int) -> None:
        super()._gen_grid(width, height)
        self.agent_pos = np.array((1, height // 2))
        self.agent_dir = 3  # north: the cue at (1, height // 2 - 1) is the cell in front of the agent
        if self.fixed_layout:
            junction = self.corridor_length + 5
            self.grid.set(junction, height // 2 - 2, Key("green"))
            self.grid.set(junction, height // 2 + 2, Ball("green"))
            north, south = (junction, height // 2 - 1), (junction, height // 2 + 1)
            cue_is_key = self.grid.get(*cue_position(self)).type == "key"
            self.success_pos, self.failure_pos = (north, south) if cue_is_key else (south, north)

    def in_hallway(self) -> bool:
        """Whether the agent is in the horizontal hallway between the start room and the junction."""
        x, y = self.agent_pos
        return y == self.height // 2 and 4 <= x <= self.corridor_length + 4

    def step(self, action: int):
        if self.conveyor and self.in_hallway():
            self.agent_dir = 0  # east
            action = Actions.forward
        return super().step(action)


class NearStartMemoryEnv(MemoryEnv):
    """minigrid's MemoryEnv whose agent starts at most ``max_start_distance`` cells east of the cue's column.

    MemoryEnv starts the agent facing east at a random cell of the middle row between the start room (``x = 1``) and
    the junction, so the cue at ``(1, height // 2 - 1)`` is behind it and it must turn around to see it: the farther
    it starts, the longer the look-back. Limiting the start to ``x = 1 .. 1 + max_start_distance`` keeps the look-back
    short (at distance 0 the cue is in view at reset; within the start room, distance <= 2, one turn shows it), which
    makes a start-state curriculum: widen the distance stage by stage up to MemoryEnv's whole hallway.

    :param size: grid size, as MemoryEnv's.
    :param max_start_distance: how many cells east of ``x = 1`` the agent may start (drawn uniformly, capped at the
        hallway's end); ``None`` draws from the whole hallway, as MemoryEnv does, with the same random numbers.
    :param random_length: as MemoryEnv's: a random hallway length per episode.
    :param kwargs: passed to :class:`~minigrid.envs.MemoryEnv` (``max_steps``, ``agent_view_size``, ...).
    """

    def __init__(
        self,
        size: int = 13,
        max_start_distance: int | None = None,
        random_length: bool = False,
        **kwargs: Any,
    ):
        if max_start_distance is not None and max_start_distance < 0:
            raise ValueError(
                f"max_start_distance must be >= 0 (0 starts the agent beside the cue) or None (anywhere in the "
                f"hallway), got {max_start_distance}"
            )
        self.max_start_distance = max_start_distance
        super().__init__(size=size, random_length=random_length, **kwargs)

    def _gen_grid(self, width: int, height: int) -> None:
        super()._gen_grid(width, height)
        if self.max_start_distance is not None:
            hallway_end = self.success_pos[0] - 1  # the junction's objects stand one cell east of the hallway's end
            self.agent_pos = np.array((self._rand_int(1, min(1 + self.max_start_distance, hallway_end) + 1), height // 2))
