"""Classic control tasks without their velocities: memory benchmarks others report on.

## Description

rl-baselines3-zoo benchmarks sb3-contrib's RecurrentPPO on gymnasium's classic control tasks with the velocities
masked out of the observation (its ``MaskVelocityWrapper``): the agent sees positions only and must infer the
velocities from the positions it saw before. :class:`MaskVelocity` does the same masking, so results compare with
rl-zoo3's (its ``ppo_lstm`` CartPoleNoVel-v1 model scores 500 ± 0).

## Observation

The base task's Box, same shape and bounds, with the velocity entries always 0:

- ``CartPoleNoVel-v1``: ``[cart position, 0, pole angle, 0]``;
- ``PendulumNoVel-v1``: ``[cos(angle), sin(angle), 0]``.

## Actions

The base task's: CartPole Discrete(2) (push left or right), Pendulum Box(-2, 2, (1,)) (torque).

## Rewards

The base task's: CartPole +1 per step (return 500 at most), Pendulum ``-(angle^2 + 0.1 angular velocity^2 + 0.001
torque^2)`` per step (return about -150 when balanced from a random start, -1,200 or less when never swung up).

## Termination

The base task's: CartPole terminates when the pole falls or the cart leaves the track and is truncated at 500 steps;
Pendulum never terminates and is truncated at 200 steps.

## Registered ids

``register_control_envs()`` (called by :func:`ebmm_rl.envs.register_envs`) registers ``CartPoleNoVel-v1`` and
``PendulumNoVel-v1`` (rl-zoo3's names), each ``gymnasium.make`` of the base id wrapped in :class:`MaskVelocity`.
"""

from __future__ import annotations

import functools
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import RecordConstructorArgs

VELOCITY_INDICES: dict[str, tuple[int, ...]] = {"CartPole-v1": (1, 3), "Pendulum-v1": (2,)}
"""Observation entries that are velocities, per base task id."""

NO_VELOCITY_IDS: dict[str, str] = {"CartPoleNoVel-v1": "CartPole-v1", "PendulumNoVel-v1": "Pendulum-v1"}
"""Registered id -> the base task it masks."""


class MaskVelocity(gym.ObservationWrapper, RecordConstructorArgs):
    """Set the velocity entries of a classic control task's observation to 0 (rl-zoo3's ``MaskVelocityWrapper``).

    Observation: the input Box, unchanged in shape and bounds; the entries :data:`VELOCITY_INDICES` names are 0.

    :param env: a task of :data:`VELOCITY_INDICES` (``env.spec.id`` says which).
    """

    def __init__(self, env: gym.Env):
        RecordConstructorArgs.__init__(self)
        gym.ObservationWrapper.__init__(self, env)
        base_id = env.spec.id if env.spec is not None else None
        if base_id not in VELOCITY_INDICES:
            raise ValueError(
                f"MaskVelocity knows the velocities of {', '.join(VELOCITY_INDICES)}, not of {base_id!r}; make the env "
                "with gymnasium.make of one of them."
            )
        self.mask = np.ones(env.observation_space.shape, dtype=env.observation_space.dtype)
        self.mask[list(VELOCITY_INDICES[base_id])] = 0

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation * self.mask


def make_no_velocity_env(base_id: str, **kwargs: Any) -> gym.Env:
    """``gymnasium.make(base_id, **kwargs)`` wrapped in :class:`MaskVelocity` (the registered ids' entry point)."""
    return MaskVelocity(gym.make(base_id, **kwargs))


def register_control_envs() -> tuple[str, ...]:
    """Register the ids of :data:`NO_VELOCITY_IDS` that gymnasium does not know yet; safe to call many times.

    :return: the ids.
    """
    for env_id, base_id in NO_VELOCITY_IDS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=functools.partial(make_no_velocity_env, base_id))
    return tuple(NO_VELOCITY_IDS)
