"""The episodic exploration bonus: new poses reported by the envs, added to the training reward outside VecMonitor,
decayed by the global step count."""

from __future__ import annotations

import numpy as np
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

from ebmm_rl.sb3.exploration import NoveltyBonusSchedule, VecNoveltyBonus
from ebmm_rl.envs import make_env


def test_bonus_is_added_to_the_training_reward_but_not_to_the_monitored_return():
    n_envs, bonus = 3, 0.25
    plain = VecMonitor(DummyVecEnv([lambda: make_env("MiniGrid-Memory-v0", novel_poses=True)] * n_envs))
    bonused = VecNoveltyBonus(
        VecMonitor(DummyVecEnv([lambda: make_env("MiniGrid-Memory-v0", novel_poses=True)] * n_envs)), bonus
    )
    plain.seed(7)
    bonused.seed(7)
    plain.reset()
    bonused.reset()
    actions = np.random.default_rng(0).integers(0, 3, size=(2000, n_envs))
    novel_steps = finished = 0
    for step_actions in actions:
        _, true_rewards, _, plain_infos = plain.step(step_actions)
        _, rewards, _, infos = bonused.step(step_actions)
        novel = np.array([info["novel_pose"] for info in infos])
        np.testing.assert_allclose(rewards, true_rewards + bonus * novel, rtol=0, atol=1e-6)
        novel_steps += novel.sum()
        for plain_info, info in zip(plain_infos, infos, strict=True):
            if "episode" in info:  # VecMonitor's return is the task's own
                assert info["episode"]["r"] == plain_info["episode"]["r"]
                finished += 1
    assert novel_steps > 0 and finished > 0


def test_bonus_needs_envs_that_report_new_poses():
    bonused = VecNoveltyBonus(DummyVecEnv([lambda: make_env("MiniGrid-Memory-v0")]), 0.1)
    bonused.reset()
    with pytest.raises(KeyError, match="novel_poses=True"):
        bonused.step(np.array([2]))


def test_schedule_decays_linearly_to_zero():
    schedule = NoveltyBonusSchedule(VecNoveltyBonus(DummyVecEnv([lambda: make_env("MiniGrid-Memory-v0")]), 0.0), 0.02, 1000)
    assert [schedule.bonus_at(steps) for steps in (0, 250, 1000, 5000)] == pytest.approx([0.02, 0.015, 0.0, 0.0])
    with pytest.raises(ValueError, match="novelty_bonus_steps > 0"):
        NoveltyBonusSchedule(schedule.bonus_env, 0.01, 0)
