"""The prototype behind the logs in this folder: ppo_oracle's settings on MiniGrid-Memory-v0 with a reward for each
(x, y, direction) new in the episode, decaying linearly to 0, written before ebmm_rl.exploration existed.

It differs from ``python -m ebmm_rl.train --agent ppo_oracle --set novelty_bonus=... --set novelty_bonus_steps=...``
only in where the bonus is added (inside each env, so there is no VecMonitor to keep out of it) and in how the envs
are seeded. The ``seed0_*`` logs came from its first version, which evaluated greedy actions only (no ``stoch``).

Usage: python oracle_bonus.py BONUS DECAY_FRACTION TOTAL_STEPS SEED [ENT_COEF]   (from the repository root)
"""

import json
import sys
import time

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv

from envs import make_env

initial_bonus, decay_fraction, total, seed = float(sys.argv[1]), float(sys.argv[2]), int(float(sys.argv[3])), int(sys.argv[4])
ent_coef = float(sys.argv[5]) if len(sys.argv) > 5 else 0.01
tag = f"b{initial_bonus}_a{decay_fraction}_e{ent_coef}_s{seed}"
torch.set_num_threads(1)


class Bonus(gym.Wrapper):
    scale = initial_bonus

    def reset(self, **kwargs):
        self.seen = set()
        observation, info = self.env.reset(**kwargs)
        self._visit()
        return observation, info

    def _visit(self):
        grid_env = self.env.unwrapped
        pose = (int(grid_env.agent_pos[0]), int(grid_env.agent_pos[1]), int(grid_env.agent_dir))
        novel = pose not in self.seen
        self.seen.add(pose)
        return novel

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        if self._visit():
            reward = reward + Bonus.scale
        return observation, reward, terminated, truncated, info


venv = DummyVecEnv([lambda: Bonus(make_env("MiniGrid-Memory-v0", oracle=True)) for _ in range(8)])
venv.seed(seed)
model = PPO(
    "MultiInputPolicy", venv, n_steps=128, batch_size=256, n_epochs=4, learning_rate=2.5e-4, ent_coef=ent_coef,
    gamma=0.99, gae_lambda=0.95, clip_range=0.2, seed=seed, device="cpu",
    policy_kwargs={"net_arch": [64, 64], "optimizer_kwargs": {"eps": 1e-5}},
)  # fmt: skip


def evaluate(episodes=50, deterministic=True):
    env = make_env("MiniGrid-Memory-v0", oracle=True)
    successes, lengths = 0, []
    for episode in range(episodes):
        observation, _ = env.reset(seed=10_000 + episode)
        done, length = False, 0
        while not done:
            action, _ = model.predict(observation, deterministic=deterministic)
            observation, reward, terminated, truncated, _ = env.step(action)
            done, length = terminated or truncated, length + 1
        successes += reward > 0
        lengths.append(length)
    return successes / episodes, float(np.mean(lengths))


class Log(BaseCallback):
    def __init__(self):
        super().__init__()
        self.next, self.start = 0, time.time()

    def _on_step(self):
        fraction = self.num_timesteps / total
        Bonus.scale = initial_bonus * max(0.0, 1 - fraction / decay_fraction) if decay_fraction > 0 else initial_bonus
        if self.num_timesteps >= self.next:
            self.next += 250_000
            success, length = evaluate()
            sampled, sampled_length = evaluate(50, False)
            row = {"tag": tag, "steps": self.num_timesteps, "success": success, "ep_len": length, "stoch": sampled}
            row |= {"stoch_len": sampled_length, "scale": Bonus.scale}
            print(json.dumps({**row, "fps": int(self.num_timesteps / (time.time() - self.start + 1e-9))}), flush=True)
        return True


model.learn(total, callback=Log())
success, length = evaluate(100)
print(json.dumps({"tag": tag, "steps": total, "success": success, "ep_len": length, "final": True}), flush=True)
