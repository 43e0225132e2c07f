"""VecEpisodicWindow: the episode's last observations in the observation, on any observation space."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from minigrid.core.actions import Actions
from stable_baselines3.common.vec_env import DummyVecEnv

from ebmm_rl import envs
from ebmm_rl.sb3 import VecEpisodicWindow

SPACES = {
    "box": spaces.Box(-2.0, 3.0, (3,), np.float32),
    "image": spaces.Box(0, 255, (36, 36, 3), np.uint8),  # channel-last, NatureCNN's smallest
    "discrete": spaces.Discrete(5),
    "discrete_from_2": spaces.Discrete(5, start=2),  # padding: its lowest value
    "multi_discrete": spaces.MultiDiscrete([3, 4]),
    "multi_binary": spaces.MultiBinary(4),
    "dict": spaces.Dict({"position": spaces.Box(-1.0, 1.0, (2,)), "colour": spaces.Discrete(3)}),
}


class CountingEnv(gym.Env):
    """Episodes of ``length`` steps whose observations are random samples of ``observation_space``; ``history`` keeps
    the current episode's observations, ``ended`` the previous episode's."""

    def __init__(self, observation_space: spaces.Space, length: int) -> None:
        self.observation_space = observation_space
        self.action_space = spaces.Discrete(2)
        self.length = length
        self.history: list[Any] = []
        self.ended: list[Any] = []

    def _observe(self) -> Any:
        self.history.append(self.observation_space.sample())
        return self.history[-1]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        self.observation_space.seed(seed)
        self.history, self.ended = [], self.history
        return self._observe(), {}

    def step(self, action: int) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        observation = self._observe()
        return observation, 0.0, False, len(self.history) == self.length, {}


def as_dict(observation: Any) -> dict[str, Any]:
    return dict(observation) if isinstance(observation, dict) else {"observation": observation}


def assert_window(observation: dict[str, np.ndarray], history: list[Any], window: int, padding: dict[str, Any]) -> None:
    """One env's windowed observation holds the last ``min(len(history), window)`` observations, padding before."""
    valid = min(len(history), window)
    assert observation["window_mask"].tolist() == [0.0] * (window - valid) + [1.0] * valid
    for key, values in as_dict(history[-1]).items():
        np.testing.assert_array_equal(observation[key], values)
        expected = [as_dict(past)[key] for past in history[-valid:]]
        np.testing.assert_array_equal(observation[f"window_{key}"][window - valid :], expected)
        assert (observation[f"window_{key}"][: window - valid] == padding[key]).all()


@pytest.mark.parametrize("name", SPACES)
def test_window_holds_the_current_episode_of_any_space(name: str):
    window, length = 3, 4
    venv = VecEpisodicWindow(DummyVecEnv([lambda: CountingEnv(SPACES[name], length)] * 2), window=window)
    venv.seed(0)
    padding = {  # zero, or the space's lowest value where zero is out of bounds
        key.removeprefix("window_"): np.clip(0, space.low[0], space.high[0])
        for key, space in venv.observation_space.items()
        if key.startswith("window_") and key != "window_mask"
    }
    observation = venv.reset()
    for step in range(2 * length + 1):
        for env, wrapped in enumerate(venv.venv.envs):
            single = {key: values[env] for key, values in observation.items()}
            assert venv.observation_space.contains(single)
            assert_window(single, wrapped.history, window, padding)
        observation, _, dones, infos = venv.step(np.zeros(2, dtype=int))
        assert dones.tolist() == [(step + 1) % (length - 1) == 0] * 2  # reset, then 3 steps
        for env, wrapped in enumerate(venv.venv.envs):
            if dones[env]:  # the ended episode's last window; the new one holds the reset observation only
                assert venv.observation_space.contains(infos[env]["terminal_observation"])
                assert_window(infos[env]["terminal_observation"], wrapped.ended, window, padding)
                assert len(wrapped.history) == 1


def test_window_of_minigrid_keeps_its_observation_space():
    # The layout ppo_ebmm's MiniGrid models were trained on: the current image and direction, their windows, the mask.
    venv = VecEpisodicWindow(DummyVecEnv([lambda: envs.make_env("EBMM-MemoryShort-v0")]), window=4)
    space = venv.observation_space
    assert set(space) == {"image", "direction", "window_image", "window_direction", "window_mask"}
    assert space["window_image"] == spaces.Box(0, np.broadcast_to(space["image"].high, (4, 3, 3, 3)), dtype=np.uint8)
    assert space["window_direction"] == spaces.Box(0, 3, (4,), np.int64)
    assert space["window_mask"] == spaces.Box(0.0, 1.0, (4,), np.float32)
    venv.seed(0)
    venv.reset()
    # Turn right, walk to the junction, turn left, step: the episode terminates at the last action.
    for action in [Actions.right] + [Actions.forward] * 4 + [Actions.left, Actions.forward]:
        observation, _, dones, infos = venv.step(np.array([action]))
    assert dones[0] and infos[0]["terminal_observation"]["window_mask"].tolist() == [1.0] * 4
    assert observation["window_mask"].tolist() == [[0.0, 0.0, 0.0, 1.0]]
    assert not observation["window_image"][0, :-1].any()


def test_bad_windows_say_what_is_wrong():
    venv = DummyVecEnv([lambda: gym.make("CartPole-v1")])
    with pytest.raises(ValueError, match="window must be >= 1"):
        VecEpisodicWindow(venv, window=0)
    with pytest.raises(ValueError, match="adds keys starting with 'window_'"):
        VecEpisodicWindow(VecEpisodicWindow(venv, window=2), window=2)
