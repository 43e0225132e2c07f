"""The agent registry and a tiny learn / save / load round trip of every baseline agent."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import PPO

from ebmm_rl.agents import Agent, agent_names, get_agent
from ebmm_rl.runs.config import load_config, split_config
from ebmm_rl.runs.experiment import default_policy, make_model, make_vec_env

BASELINES = ["ppo", "ppo_framestack", "ppo_lstm", "ppo_oracle"]
ENV_ID = "EBMM-MemoryShort-v0"
TINY = ["n_envs=2", "n_steps=16", "batch_size=16", "n_epochs=1", "policy_kwargs.net_arch=[16]"]


def test_registry_lists_the_baselines():
    assert set(BASELINES) <= set(agent_names())
    for name in BASELINES:
        agent = get_agent(name)
        assert isinstance(agent, Agent)
        assert agent.name == name


def test_unknown_agent_suggests_a_name():
    with pytest.raises(ValueError, match=r"Unknown agent 'ppo_lstn': did you mean 'ppo_lstm'\?.*Available agents: .*ppo_"):
        get_agent("ppo_lstn")


def test_agent_rejects_a_window_below_one():
    with pytest.raises(ValueError, match="window must be None"):
        Agent(name="bad", algorithm=PPO, policy="MultiInputPolicy", description="", window=0)


@pytest.mark.parametrize(
    ("name", "extra_keys"),
    [("ppo", set()), ("ppo_framestack", {"window_image", "window_direction", "window_mask"}), ("ppo_oracle", {"cue"})],
)
def test_env_wrapping_follows_the_agent(name, extra_keys):
    agent = get_agent(name)
    config = load_config(agent, ENV_ID, overrides=TINY)
    env = make_vec_env(agent, ENV_ID, config, n_envs=1, seed=0)
    try:
        assert isinstance(env.observation_space, spaces.Dict)
        assert set(env.observation_space.spaces) == {"image", "direction"} | extra_keys
        if name == "ppo_framestack":
            assert env.observation_space["window_image"].shape[0] == 4
    finally:
        env.close()


@pytest.mark.parametrize("name", BASELINES)
def test_learn_save_load_round_trip(name, tmp_path):
    agent = get_agent(name)
    config = load_config(agent, ENV_ID, overrides=TINY)
    run, kwargs = split_config(config, agent)
    env = make_vec_env(agent, ENV_ID, config, run["n_envs"], seed=0)
    try:
        model = make_model(agent, env, kwargs, seed=0, device="cpu")
        model.learn(64)
        assert model.num_timesteps == 64
        observation = env.reset()
        episode_start = np.ones(env.num_envs, dtype=bool)
        actions, state = model.predict(observation, episode_start=episode_start, deterministic=True)
        model.save(tmp_path / "model.zip")
        loaded = agent.algorithm.load(tmp_path / "model.zip", device="cpu")
        loaded_actions, loaded_state = loaded.predict(observation, episode_start=episode_start, deterministic=True)
        np.testing.assert_array_equal(actions, loaded_actions)
        assert (state is None) == (name != "ppo_lstm") == (loaded_state is None)
        assert loaded.policy_kwargs == model.policy_kwargs
        for optimizer in (model.policy.optimizer, loaded.policy.optimizer):  # the configs' fused Adam keeps SB3's eps
            assert isinstance(optimizer, torch.optim.Adam)
            assert (optimizer.defaults["eps"], optimizer.defaults["fused"]) == (1e-5, True)
        if name == "ppo_lstm":
            assert loaded.policy.lstm_actor.hidden_size == 64
    finally:
        env.close()


@pytest.mark.parametrize(
    ("name", "env_id", "policy"),
    [
        ("ppo", "CartPoleNoVel-v1", "MlpPolicy"),
        ("ppo", "EBMM-MemoryShort-v0", "MultiInputPolicy"),
        ("ppo_lstm", "PendulumNoVel-v1", "MlpLstmPolicy"),
        ("ppo_lstm", "EBMM-MemoryShort-v0", "MultiInputLstmPolicy"),
        ("ppo_ebmm", "CartPoleNoVel-v1", "MultiInputPolicy"),  # the window makes the observation a Dict
    ],
)
def test_the_policy_follows_the_observation_space(name, env_id, policy):
    agent = get_agent(name)
    config = load_config(agent, env_id, overrides=TINY)
    run, kwargs = split_config(config, agent)
    env = make_vec_env(agent, env_id, config, run["n_envs"], seed=0)
    try:
        assert default_policy(agent.algorithm, env.observation_space) == policy
        model = make_model(agent, env, kwargs, seed=0, device="cpu")
        assert type(model.policy) is agent.algorithm.policy_aliases[policy]
    finally:
        env.close()
