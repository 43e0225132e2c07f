"""Every agent trains on a CUDA device, and a model trained there acts the same once loaded on the CPU.

Skipped without CUDA (CI has none); run on a GPU machine with ``python -m pytest tests/test_cuda.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ebmm_rl.agents import agent_names, get_agent
from ebmm_rl.runs.config import load_config, split_config
from ebmm_rl.runs.experiment import make_vec_env

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

ENV_ID = "EBMM-MemoryShort-v0"
TINY = ["n_envs=2", "n_steps=16", "batch_size=32", "n_epochs=1", "policy_kwargs.net_arch=[16]"]
RECURRENT = {"ppo_lstm", "ppo_ebmm_recurrent"}


def action_probabilities(model, observation, state, episode_start) -> torch.Tensor:
    """The policy's action distribution ``[n_envs, n_actions]`` on the CPU (``state``: what ``predict`` returned)."""
    policy = model.policy
    obs_tensor, _ = policy.obs_to_tensor(observation)
    with torch.no_grad():
        if state is None:
            distribution = policy.get_distribution(obs_tensor)
        else:
            states = tuple(torch.as_tensor(part, device=policy.device) for part in state)
            starts = torch.as_tensor(episode_start, dtype=torch.float32, device=policy.device)
            distribution, _ = policy.get_distribution(obs_tensor, states, starts)
    return distribution.distribution.probs.cpu()


@pytest.mark.parametrize("name", agent_names())
def test_agent_learns_on_cuda_and_acts_the_same_on_cpu(name, tmp_path, monkeypatch):
    # cuDNN's LSTM computes in TF32 by default on Ampere and later GPUs (about 1e-3 relative error, seen on an H200);
    # full float32 makes the comparison with the CPU a test of the code, not of the number format.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    agent = get_agent(name)
    config = load_config(agent, ENV_ID, overrides=TINY)
    run, kwargs = split_config(config, agent)
    env = make_vec_env(agent, ENV_ID, config, run["n_envs"], seed=0)
    try:
        model = agent.algorithm(env=env, seed=0, device="cuda", **kwargs)
        model.learn(64)
        assert model.num_timesteps == 64
        assert all(parameter.device.type == "cuda" for parameter in model.policy.parameters())
        assert all(torch.isfinite(parameter).all() for parameter in model.policy.parameters())
        model.save(tmp_path / "model.zip")
        on_cpu = agent.algorithm.load(tmp_path / "model.zip", device="cpu")

        observation = env.reset()
        episode_start = np.ones(env.num_envs, dtype=bool)
        actions, gpu_state = model.predict(observation, episode_start=episode_start, deterministic=True)
        _, cpu_state = on_cpu.predict(observation, episode_start=episode_start, deterministic=True)
        if name in RECURRENT:  # one step on, from the state each device carried
            assert gpu_state is not None and cpu_state is not None
            for gpu_part, cpu_part in zip(gpu_state, cpu_state, strict=True):
                np.testing.assert_allclose(gpu_part, cpu_part, atol=1e-4, rtol=1e-3)
            observation, *_ = env.step(actions)
            episode_start = np.zeros(env.num_envs, dtype=bool)
        gpu_probabilities = action_probabilities(model, observation, gpu_state, episode_start)
        cpu_probabilities = action_probabilities(on_cpu, observation, cpu_state, episode_start)
        torch.testing.assert_close(gpu_probabilities, cpu_probabilities, atol=1e-4, rtol=1e-3)
    finally:
        env.close()
