"""Tests of the envs package: registration, the Memory tasks, the wrappers and make_env."""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env, data_equivalence
from minigrid.core.actions import Actions
from stable_baselines3 import PPO

from ebmm_rl.envs import (
    DEFAULT_ENV_ID,
    CueOracle,
    CueStartMemoryEnv,
    MaskVelocity,
    NearStartMemoryEnv,
    NovelPoses,
    make_env,
    register_envs,
    resolve_env_id,
)
from ebmm_rl.envs.control import NO_VELOCITY_IDS
from ebmm_rl.envs.memory import CUE_OBJECT_TYPES, cue_position
from ebmm_rl.envs.wrappers import CUE_UNKNOWN

ENV_IDS = register_envs()
MINIGRID_IDS = [env_id for env_id in ENV_IDS if env_id not in NO_VELOCITY_IDS]

# check_env recommends the unwrapped env; for the wrappers the wrapped env is what is being checked.
ignore_wrapped_warning = pytest.mark.filterwarnings("ignore:.*is different from the unwrapped version")

WRAPPER_OPTIONS = [
    pytest.param({}, id="default"),
    pytest.param({"three_actions": False}, id="seven_actions"),
    pytest.param({"oracle": True}, id="oracle"),
    pytest.param({"oracle": True, "agent_view_size": 5}, id="oracle_view5"),
    pytest.param({"novel_poses": True}, id="novel_poses"),
]


def rollout(env: gym.Env, seed: int, actions: list[int]) -> list[Any]:
    """Observations of a seeded episode under fixed actions, stopping at the episode's end."""
    observation, _ = env.reset(seed=seed)
    observations = [observation]
    for action in actions:
        observation, _, terminated, truncated, _ = env.step(action)
        observations.append(observation)
        if terminated or truncated:
            break
    return observations


def matching_object_type(memory_env: Any) -> str:
    """Type of the choice object next to the success cell (privileged: read from the grid)."""
    success_x, success_y = memory_env.success_pos
    object_y = success_y - 1 if success_y < memory_env.height // 2 else success_y + 1
    return memory_env.grid.get(success_x, object_y).type


def start_column(env: gym.Env, seed: int) -> int:
    """Grid column of the agent after a reset with ``seed``."""
    env.reset(seed=seed)
    return int(env.unwrapped.agent_pos[0])


def test_register_envs_is_idempotent():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # gymnasium warns when an id is registered again
        assert register_envs() == ENV_IDS
    assert all(env_id in gym.registry for env_id in ENV_IDS)
    for size in (7, 9, 11, 13, 15, 17):
        assert {f"MiniGrid-MemoryS{size}-v0", f"MiniGrid-MemoryS{size}Random-v0"} <= set(ENV_IDS)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_registered_env_passes_check_env(env_id: str):
    env = gym.make(env_id)
    check_env(env.unwrapped, skip_render_check=True)


@ignore_wrapped_warning
@pytest.mark.parametrize("options", WRAPPER_OPTIONS)
def test_wrapped_env_passes_check_env(options: dict[str, Any]):
    env = make_env("EBMM-MemoryS7View3-v0", **options)
    check_env(env, skip_render_check=True)
    assert "mission" not in env.observation_space.spaces
    assert env.observation_space.contains(env.reset(seed=0)[0])


@pytest.mark.parametrize("env_id", MINIGRID_IDS)
def test_seeded_episodes_are_deterministic(env_id: str):
    actions = np.random.default_rng(0).integers(0, 3, size=40).tolist()
    first = rollout(make_env(env_id, oracle=True), seed=7, actions=actions)
    second = rollout(make_env(env_id, oracle=True), seed=7, actions=actions)
    assert len(first) == len(second)
    assert all(data_equivalence(a, b) for a, b in zip(first, second, strict=True))


def test_agent_view_size_option():
    assert gym.make("MiniGrid-MemoryS13-v0", agent_view_size=3).observation_space["image"].shape == (3, 3, 3)
    env = make_env("MiniGrid-Memory", agent_view_size=5)
    assert env.observation_space["image"].shape == (5, 5, 3)
    assert env.reset(seed=0)[0]["image"].shape == (5, 5, 3)


def test_aliases_resolve():
    assert resolve_env_id("MiniGrid-Memory") == DEFAULT_ENV_ID == "MiniGrid-Memory-v0"
    assert resolve_env_id("EBMM-MemoryShort") == "EBMM-MemoryShort-v0"
    assert resolve_env_id("MiniGrid-MemoryS13-v0") == "MiniGrid-MemoryS13-v0"
    assert make_env("MiniGrid-Memory").unwrapped.spec.id == DEFAULT_ENV_ID


def test_unknown_env_id_suggests_a_close_match():
    with pytest.raises(ValueError, match="did you mean 'MiniGrid-Memory'"):
        make_env("MiniGrid-Memroy")


def test_invalid_arguments_say_what_is_allowed():
    with pytest.raises(TypeError, match="oracle work on MiniGrid envs only"):
        make_env("CartPoleNoVel-v1", oracle=True)
    with pytest.raises(ValueError, match="corridor_length must be >= 0"):
        CueStartMemoryEnv(corridor_length=-1)
    with pytest.raises(ValueError, match="max_start_distance must be >= 0"):
        NearStartMemoryEnv(max_start_distance=-1)
    with pytest.raises(TypeError, match="CueOracle works on MiniGrid Memory tasks"):
        CueOracle(make_env("MiniGrid-Empty-5x5-v0"))


@ignore_wrapped_warning
@pytest.mark.parametrize("env_id", sorted(NO_VELOCITY_IDS))
def test_no_velocity_envs_mask_the_velocities_only(env_id: str):
    env = make_env(env_id)
    check_env(env, skip_render_check=True)
    base = gym.make(NO_VELOCITY_IDS[env_id])
    velocities = np.flatnonzero(env.get_wrapper_attr("mask") == 0)
    masked, _ = env.reset(seed=3)
    full, _ = base.reset(seed=3)
    env.action_space.seed(0)
    for _ in range(5):  # the same task: the other entries and the rewards are the base task's
        np.testing.assert_array_equal(masked[velocities], 0.0)
        np.testing.assert_array_equal(np.delete(masked, velocities), np.delete(full, velocities))
        action = env.action_space.sample()
        masked, reward, *_ = env.step(action)
        full, expected_reward, *_ = base.step(action)
        assert reward == expected_reward
    assert full[velocities].any()
    with pytest.raises(ValueError, match="MaskVelocity knows the velocities of"):
        MaskVelocity(gym.make("Acrobot-v1"))


@pytest.mark.parametrize(
    ("env_id", "corridor_length"),
    [
        ("EBMM-MemoryShort-v0", 0),
        ("EBMM-MemoryTMaze-v0", 0),
        ("EBMM-MemoryS13TMaze-v0", 6),
        ("EBMM-MemoryLong-v0", 200),
        ("EBMM-MemoryDelay-v0", 200),
    ],
)
def test_cue_oracle_solves_cue_start_task(env_id: str, corridor_length: int):
    for seed in range(4):
        env = make_env(env_id, oracle=True)
        observation, _ = env.reset(seed=seed)
        memory_env = env.unwrapped
        # The cue is in view at reset, and the oracle names the type of the matching choice object.
        assert observation["cue"] == 1 + CUE_OBJECT_TYPES.index(matching_object_type(memory_env))
        north_matches = memory_env.success_pos[1] < memory_env.height // 2
        actions = [Actions.right] + [Actions.forward] * (corridor_length + 4)
        actions += [Actions.left if north_matches else Actions.right, Actions.forward]
        assert len(actions) == memory_env.shortest_solution_length
        for step, action in enumerate(actions):
            observation, reward, terminated, truncated, _ = env.step(action)
            assert terminated == (step == len(actions) - 1) and not truncated
        assert reward > 0.0


def test_conveyor_carries_the_agent_through_the_hallway_whatever_it_does():
    env = make_env("EBMM-MemoryDelay-v0", corridor_length=30)
    memory_env = env.unwrapped
    env.reset(seed=0)
    for action in (Actions.right, Actions.forward, Actions.forward, Actions.forward):  # into the hallway at x = 4
        env.step(action)
    assert memory_env.in_hallway() and memory_env.agent_pos[0] == 4
    rng = np.random.default_rng(0)
    for step in range(31):
        _, _, terminated, truncated, _ = env.step(int(rng.integers(3)))  # any action moves the agent one cell east
        assert not (terminated or truncated)
        assert tuple(memory_env.agent_pos) == (5 + step, 3)
    assert not memory_env.in_hallway()  # at the junction the agent acts freely again
    env.step(Actions.left)
    assert memory_env.agent_dir == 3 and tuple(memory_env.agent_pos) == (35, 3)


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [("EBMM-MemoryDelay-v0", {"corridor_length": 5}), ("EBMM-MemoryTMaze-v0", {}), ("EBMM-MemoryS13TMaze-v0", {})],
)
def test_t_maze_tasks_the_cue_says_which_way_to_turn(env_id: str, kwargs: dict[str, Any]):
    cues = set()
    for seed in range(12):
        env = make_env(env_id, **kwargs)
        env.reset(seed=seed)
        memory_env = env.unwrapped
        junction, middle = memory_env.corridor_length + 5, memory_env.height // 2
        assert memory_env.grid.get(junction, middle - 2).type == "key"
        assert memory_env.grid.get(junction, middle + 2).type == "ball"
        cue = memory_env.grid.get(1, middle - 1).type
        cues.add(cue)
        assert cue == matching_object_type(memory_env)
        assert (memory_env.success_pos[1] < middle) == (cue == "key")
    assert cues == {"key", "ball"}


def test_s13_t_maze_hides_the_cue_from_the_hallway_and_the_junction():
    env = make_env("EBMM-MemoryS13TMaze-v0")
    env.reset(seed=0)
    memory_env = env.unwrapped
    assert (memory_env.width, memory_env.height, memory_env.agent_view_size) == (13, 7, 7)  # S13's width, MiniGrid's view
    cue = cue_position(memory_env)
    assert memory_env.agent_sees(*cue)
    env.step(Actions.right)  # facing east, the cue beside the agent
    for _ in range(10):  # along the hallway to the junction at x = 11
        env.step(Actions.forward)
        assert not memory_env.agent_sees(*cue)
    for turn in (Actions.left, Actions.left, Actions.left):  # north, west (back down the hallway), south
        env.step(turn)
        assert not memory_env.agent_sees(*cue)


def test_cue_oracle_is_unknown_until_the_cue_is_seen():
    env = make_env("MiniGrid-MemoryS11-v0", oracle=True, agent_view_size=3)
    # A start facing east one or two cells right of the cue's column: the cue is behind the agent, and turning left
    # (to face north, then west) brings it into the 3x3 view.
    seed = next(seed for seed in range(100) if start_column(env, seed) in (2, 3))
    observation, _ = env.reset(seed=seed)
    assert observation["cue"] == CUE_UNKNOWN
    cues = [env.step(Actions.left)[0]["cue"] for _ in range(2)]
    expected = 1 + CUE_OBJECT_TYPES.index(matching_object_type(env.unwrapped))
    assert expected in cues and cues[-1] == expected
    # Known for the rest of the episode (the cue is out of view again after two more turns), unknown after reset.
    assert [env.step(Actions.left)[0]["cue"] for _ in range(2)] == [expected, expected]
    assert env.reset(seed=seed)[0]["cue"] == CUE_UNKNOWN


def test_sb3_ppo_learns_on_wrapped_env():
    # Every key SB3 has to encode: the symbolic image (flattened, not a NatureCNN), the direction and the cue.
    env = make_env("EBMM-MemoryShort-v0", oracle=True)
    PPO("MultiInputPolicy", env, n_steps=16, batch_size=16, seed=0).learn(32)


@pytest.mark.parametrize(("seed", "steps_east"), [(5, 2), (7, 1)])  # starts at x = 7 and at x = 10, the hallway's end
def test_novel_poses_marks_the_first_visit_of_each_pose_in_an_episode(seed: int, steps_east: int):
    env = make_env("MiniGrid-Memory-v0", novel_poses=True)
    left, right, forward = 0, 1, 2
    reference = make_env("MiniGrid-Memory-v0")
    for _ in range(2):  # reset forgets the poses
        observation, _ = env.reset(seed=seed)
        expected, _ = reference.reset(seed=seed)
        assert data_equivalence(observation, expected)
        novel = []
        for action in (left, left, left, left, right, left, forward, forward):
            observation, reward, *_, info = env.step(action)
            expected, expected_reward, *_ = reference.step(action)
            assert data_equivalence(observation, expected) and reward == expected_reward
            novel.append(info["novel_pose"])
        # Three new directions, then back to seen ones; each step east that moves is new, one into the wall is not.
        assert novel == [True, True, True, False, False, False] + [True] * steps_east + [False] * (2 - steps_east)


def test_novel_poses_needs_a_minigrid_env():
    with pytest.raises(TypeError, match="NovelPoses needs a MiniGrid env"):
        NovelPoses(gym.make("CartPole-v1"))


@pytest.mark.parametrize(("max_start_distance", "start_columns"), [(0, {1}), (2, {1, 2, 3}), (5, set(range(1, 7)))])
def test_near_start_limits_the_start_to_a_distance_from_the_cue(max_start_distance: int, start_columns: set[int]):
    env = make_env("EBMM-MemoryS13Near-v0", max_start_distance=max_start_distance)
    seen = set()
    for seed in range(60):
        env.reset(seed=seed)
        memory_env = env.unwrapped
        seen.add(int(memory_env.agent_pos[0]))
        assert memory_env.agent_pos[1] == memory_env.height // 2 and memory_env.agent_dir == 0
        if memory_env.agent_pos[0] == 1:  # beside the cue, it is in view at reset
            assert memory_env.agent_sees(*cue_position(memory_env))
    assert seen == start_columns


def test_near_start_without_a_distance_is_minigrid_memory():
    near = NearStartMemoryEnv(size=13)
    minigrid_memory = gym.make(DEFAULT_ENV_ID).unwrapped
    for seed in range(10):
        near_observation, _ = near.reset(seed=seed)
        observation, _ = minigrid_memory.reset(seed=seed)
        assert data_equivalence(near_observation, observation)
        assert tuple(near.agent_pos) == tuple(minigrid_memory.agent_pos)
        assert near.success_pos == minigrid_memory.success_pos
