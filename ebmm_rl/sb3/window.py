"""The current episode's last observations as part of the observation: :class:`VecEpisodicWindow`, for any env.

A stateless features extractor (SB3 keeps no state between calls) sees the past only through the observation; this
wrapper puts the episode's recent observations there, as SB3's ``VecFrameStack`` stacks frames, with a validity mask
and never mixing two episodes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

OBSERVATION_KEY = "observation"
"""The key of the current observation when the wrapped env's observation is not a Dict."""
WINDOW_PREFIX = "window_"
MASK_KEY = "window_mask"
WRAP_HINT = "env = VecEpisodicWindow(env, window=16)  # from ebmm_rl.sb3 import VecEpisodicWindow"
"""The line that gives a vectorised env the window; error messages show it."""


def window_space(space: spaces.Space, window: int) -> spaces.Box:
    """The Box holding ``window`` observations of ``space``, oldest first: ``[window, *shape]``.

    Box keeps its dtype and bounds; Discrete and MultiDiscrete become their integer values (int64, from ``start``);
    MultiBinary its bits (int8). SB3 turns such a Box into floats of the same values, which
    :class:`~ebmm_rl.sb3.extractor.EBMMExtractor` preprocesses as SB3 would the observation itself.

    :param space: one observation's space (not a Dict: SB3 nests no spaces)
    :param window: observations held
    """
    if isinstance(space, spaces.Box):
        low, high, dtype = space.low, space.high, space.dtype
    elif isinstance(space, spaces.Discrete):
        low, high, dtype = np.array(space.start), np.array(space.start + space.n - 1), np.int64
    elif isinstance(space, spaces.MultiDiscrete):
        low, high, dtype = space.start, space.start + space.nvec - 1, np.int64
    elif isinstance(space, spaces.MultiBinary):
        low, high, dtype = np.zeros(space.shape), np.ones(space.shape), np.int8
    else:
        raise TypeError(
            f"VecEpisodicWindow holds Box, Discrete, MultiDiscrete and MultiBinary observations (SB3's), got {space}."
        )
    shape = (window, *np.shape(low))
    return spaces.Box(
        low=np.broadcast_to(low, shape).astype(dtype), high=np.broadcast_to(high, shape).astype(dtype), dtype=dtype
    )


def current_spaces(observation_space: spaces.Space) -> dict[str, spaces.Space]:
    """The current observation's spaces in a windowed observation space, by key (the keys not starting with
    ``window_``)."""
    keys = observation_space.spaces if isinstance(observation_space, spaces.Dict) else {}
    return {key: space for key, space in keys.items() if not key.startswith(WINDOW_PREFIX)}


class VecEpisodicWindow(VecEnvWrapper):
    """Add the last ``window`` observations of each env's current episode to its observation.

    The observation becomes a Dict: the current observation (its own keys if it is a Dict, else ``observation``),
    ``window_<key>`` per key (:func:`window_space`: ``[window, ...]``, oldest first, the current observation last) and
    ``window_mask`` (``Box([window], float32)``, 1.0 for an observation of this episode, 0.0 for padding). The window
    never crosses an episode boundary: when an episode ends, the env's window empties and holds the first observation
    of the next one; slots older than the episode are padding (zeros, or the space's lowest value if zero is out of
    bounds). After ``k`` steps of an episode the last ``min(k + 1, window)`` slots are valid. The
    ``terminal_observation`` in a step's info is windowed too (the ended episode's last window), as SB3's algorithms
    expect of it when they bootstrap a truncated episode.

    :param venv: the vectorised env (any observation space SB3 supports: Box, Discrete, MultiDiscrete, MultiBinary, or
        a Dict of them)
    :param window: observations held, >= 1 (1: the current observation only)
    """

    def __init__(self, venv: VecEnv, window: int) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1 (the current observation is always in it), got {window}")
        wrapped = venv.observation_space
        self.window = window
        self.is_dict = isinstance(wrapped, spaces.Dict)
        current = dict(wrapped.spaces) if self.is_dict else {OBSERVATION_KEY: wrapped}
        clashing = [key for key in current if key.startswith(WINDOW_PREFIX)]
        if clashing:
            raise ValueError(f"VecEpisodicWindow adds keys starting with {WINDOW_PREFIX!r}; the observation has {clashing}.")
        windows = {WINDOW_PREFIX + key: window_space(space, window) for key, space in current.items()}
        mask = spaces.Box(low=0.0, high=1.0, shape=(window,), dtype=np.float32)
        super().__init__(venv, observation_space=spaces.Dict({**current, **windows, MASK_KEY: mask}))
        # The windows of all envs, [n_envs, window, ...] per key, shifted by one slot per step; observations get copies.
        self._windows = {
            key: np.zeros((self.num_envs, *space.shape), dtype=space.dtype)
            for key, space in {**windows, MASK_KEY: mask}.items()
        }
        self._padding = {
            key: np.clip(np.zeros((), space.dtype), space.low[0], space.high[0]) for key, space in windows.items()
        }
        self._padding[MASK_KEY] = np.float32(0.0)

    def _as_dict(self, observation: VecEnvObs) -> dict[str, np.ndarray]:
        return dict(observation) if self.is_dict else {OBSERVATION_KEY: observation}

    def _empty(self, envs: np.ndarray | slice) -> None:
        for key, values in self._windows.items():
            values[envs] = self._padding[key]

    def _push(self, current: dict[str, np.ndarray]) -> None:
        for key, values in self._windows.items():
            values[:, :-1] = values[:, 1:]
            values[:, -1] = 1.0 if key == MASK_KEY else current[key.removeprefix(WINDOW_PREFIX)]

    def _observation(self, current: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {**current, **{key: values.copy() for key, values in self._windows.items()}}

    def reset(self) -> dict[str, np.ndarray]:
        current = self._as_dict(self.venv.reset())
        self._empty(slice(None))
        self._push(current)
        return self._observation(current)

    def step_wait(self) -> VecEnvStepReturn:
        observation, rewards, dones, infos = self.venv.step_wait()
        current = self._as_dict(observation)
        for env in np.flatnonzero(dones):
            if "terminal_observation" in infos[env]:
                terminal = self._as_dict(infos[env]["terminal_observation"])
                infos[env]["terminal_observation"] = self._terminal_window(env, terminal)
        self._empty(dones.astype(bool))
        self._push(current)
        return self._observation(current), rewards, dones, infos

    def _terminal_window(self, env: int, terminal: dict[str, Any]) -> dict[str, np.ndarray]:
        """One env's observation dict for the last observation of its ended episode."""
        window = {}
        for key, values in self._windows.items():
            window[key] = np.concatenate(
                [values[env, 1:], [1.0 if key == MASK_KEY else terminal[key.removeprefix(WINDOW_PREFIX)]]]
            )
            window[key] = window[key].astype(values.dtype)
        return {**terminal, **window}
