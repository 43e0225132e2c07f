"""The online recurrent EBMM: EBMMCell, EBMMRecurrentPolicy inside RecurrentPPO, and the ppo_ebmm_recurrent agent."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from stable_baselines3.common.logger import configure
from stable_baselines3.common.torch_layers import CombinedExtractor, FlattenExtractor
from stable_baselines3.common.vec_env import DummyVecEnv

from ebmm_rl.agents import get_agent
from ebmm_rl.agents.ppo_ebmm_recurrent import EBMMRecurrentPPO
from ebmm_rl.runs.config import load_config, split_config
from ebmm_rl.memory import EBMM, EBMMCell, MLPEnergy
from ebmm_rl.sb3.recurrent import EBMMRecurrentPolicy
from ebmm_rl.runs.experiment import make_vec_env
from test_window import SPACES, CountingEnv

ENV_ID = "EBMM-MemoryShort-v0"
TINY = [
    "n_envs=2",
    "n_steps=16",
    "batch_size=32",
    "n_epochs=1",
    "policy_kwargs.net_arch=[16]",
    "policy_kwargs.memory.fast_units=3",  # memory_size = 3 * 33 = 99 floats: odd, so the (hidden, cell) split pads one
]


def make_cell(dim: int = 6, n_queries: int = 2) -> EBMMCell:
    torch.manual_seed(0)
    memory = EBMM(MLPEnergy(dim, hidden=8, fast_units=3, hops=1, hop_dim=8), read_steps=2, projection=(-1, 1))
    return EBMMCell(memory, n_queries=n_queries)


def tiny_model(transition_patterns: bool) -> EBMMRecurrentPPO:
    agent = get_agent("ppo_ebmm_recurrent")
    config = load_config(agent, ENV_ID, overrides=[*TINY, f"policy_kwargs.transition_patterns={transition_patterns}"])
    _, kwargs = split_config(config, agent)
    env = make_vec_env(agent, ENV_ID, config, n_envs=2, seed=0)
    return agent.algorithm(env=env, seed=0, device="cpu", **kwargs)


@pytest.fixture(params=[False, True], ids=["step_patterns", "transition_patterns"])
def model(request):
    model = tiny_model(request.param)
    yield model
    model.env.close()


# ---------------------------------------------------------------------------------------------------- EBMMCell
def test_cell_shapes_and_reset_to_theta_bar():
    cell = make_cell()
    state = cell.memory.init_state(3)
    assert state.weights.shape == (3, cell.memory.memory_size)
    patterns = torch.rand(4, 3, 6) * 2 - 1
    outputs, state = cell.forward_sequence(patterns, state)
    assert outputs.shape == (4, 3, cell.output_dim) == (4, 3, 6 * 3)
    torch.testing.assert_close(outputs[..., :6], patterns)  # the pattern itself comes first
    assert not torch.allclose(state.weights, cell.memory.theta_bar.expand(3, -1))

    reset = cell.reset(state, torch.tensor([True, False, True]))
    torch.testing.assert_close(reset.weights[0], cell.memory.theta_bar)
    torch.testing.assert_close(reset.weights[2], cell.memory.theta_bar)
    torch.testing.assert_close(reset.weights[1], state.weights[1])


def test_cell_episode_start_forgets_the_previous_episode():
    cell = make_cell()
    first, second = torch.rand(2, 1, 6) * 2 - 1
    _, carried = cell(first, cell.memory.init_state(1))
    with_start, _ = cell(second, carried, torch.tensor([True]))
    fresh, _ = cell(second, cell.memory.init_state(1))
    without_start, _ = cell(second, carried, torch.tensor([False]))
    torch.testing.assert_close(with_start, fresh)
    assert not torch.allclose(without_start, fresh)


def test_cell_sequence_equals_steps_and_memories_are_independent():
    cell = make_cell()
    patterns = torch.rand(5, 3, 6) * 2 - 1
    starts = torch.zeros(5, 3, dtype=torch.bool)
    starts[2, 1] = True
    outputs, final = cell.forward_sequence(patterns, cell.memory.init_state(3), starts)
    state = cell.memory.init_state(3)
    for step in range(5):
        output, state = cell(patterns[step], state, starts[step])
        torch.testing.assert_close(output, outputs[step])
    torch.testing.assert_close(state.weights, final.weights)
    alone, _ = cell.forward_sequence(patterns[:, :1], cell.memory.init_state(1), starts[:, :1])
    torch.testing.assert_close(alone[:, 0], outputs[:, 0])


def test_cell_rejects_a_memory_without_the_tanh_box():
    memory = EBMM(MLPEnergy(4, hidden=8, fast_units=2, hops=1, hop_dim=8), projection=(0, 1))
    with pytest.raises(ValueError, match=r"projection=\(-1, 1\)"):
        EBMMCell(memory)


def test_cell_acting_without_graph_matches_training_values():
    cell = make_cell()
    patterns = torch.rand(3, 2, 6) * 2 - 1
    tracked, _ = cell.forward_sequence(patterns, cell.memory.init_state(2))
    with torch.no_grad():
        acting, _ = cell.forward_sequence(patterns, cell.memory.init_state(2))
    assert tracked.requires_grad and not acting.requires_grad
    torch.testing.assert_close(acting, tracked.detach())


# ---------------------------------------------------------------------------------------------------- the policy
def test_state_is_the_fast_weights_offset_split_in_two():
    model = tiny_model(transition_patterns=False)
    policy: EBMMRecurrentPolicy = model.policy
    memory_size = policy.memory_size
    assert memory_size == 99
    assert policy.lstm_hidden_state_shape == (1, 1, 50)
    assert model.rollout_buffer.hidden_states_pi.shape == (16, 1, 2, 50)
    zeros = (torch.zeros(1, 2, 50), torch.zeros(1, 2, 50))
    torch.testing.assert_close(policy.to_memory_state(zeros)[0].weights, policy.memory.theta_bar.expand(2, -1))
    weights = policy.memory.theta_bar + torch.randn(2, memory_size)
    hidden, cell = policy.to_recurrent_state(policy.memory.as_state(weights))
    assert hidden.shape == cell.shape == (1, 2, 50)
    assert torch.all(cell[0, :, -1] == 0)  # padding
    torch.testing.assert_close(policy.to_memory_state((hidden, cell))[0].weights, weights)


def test_transition_state_carries_the_last_features():
    model = tiny_model(transition_patterns=True)
    policy: EBMMRecurrentPolicy = model.policy
    features_dim = policy.features_dim
    assert policy.carried_dim == features_dim == 32
    assert policy.lstm_hidden_state_shape == (1, 1, (99 + 32 + 1) // 2)
    weights = policy.memory.theta_bar + torch.randn(2, 99)
    carried = torch.randn(2, features_dim)
    memory_state, carried_back = policy.to_memory_state(policy.to_recurrent_state(policy.memory.as_state(weights), carried))
    torch.testing.assert_close(memory_state.weights, weights)
    torch.testing.assert_close(carried_back, carried)

    features = torch.randn(3, 2, features_dim)  # [time, n_seq, features_dim]
    starts = torch.tensor([[False, True], [False, False], [True, False]])
    patterns, last = policy.make_patterns(features, carried, starts)
    previous = torch.stack([carried[0], features[0, 0], torch.zeros(features_dim)])  # sequence 0: a start at step 2
    torch.testing.assert_close(patterns[:, 0], policy.pattern_head(torch.cat([features[:, 0], previous], dim=-1)))
    previous = torch.stack([torch.zeros(features_dim), features[0, 1], features[1, 1]])  # sequence 1: a start at step 0
    torch.testing.assert_close(patterns[:, 1], policy.pattern_head(torch.cat([features[:, 1], previous], dim=-1)))
    torch.testing.assert_close(last, features[-1])


def test_one_step_at_a_time_equals_the_sequence_at_once(model):
    """What RecurrentPPO computes while acting (one step per call, state carried) equals what it computes when it
    replays the stored sequence in training (evaluate_actions)."""
    policy = model.policy
    env = model.env
    n_envs, steps = env.num_envs, 12
    obs = env.reset()
    states = (torch.zeros(1, n_envs, policy.state_half), torch.zeros(1, n_envs, policy.state_half))
    episode_starts = np.ones(n_envs, dtype=bool)
    initial = states
    observations, actions, starts, log_probs, values = [], [], [], [], []
    for _ in range(steps):
        obs_tensor = policy.obs_to_tensor(obs)[0]
        start_tensor = torch.as_tensor(episode_starts, dtype=torch.float32)
        with torch.no_grad():
            action, value, log_prob, rnn = policy(obs_tensor, RNNStates(states, states), start_tensor)
        states = rnn.pi
        observations.append(obs_tensor)
        actions.append(action)
        starts.append(start_tensor)
        log_probs.append(log_prob)
        values.append(value.flatten())
        obs, _, dones, _ = env.step(action.numpy())
        episode_starts = dones
    # Sequence-major, as RecurrentPPO lays out a minibatch: env 0's steps, then env 1's.
    sequence_obs = {key: torch.stack([o[key] for o in observations], dim=1).flatten(0, 1) for key in observations[0]}
    sequence_actions = torch.stack(actions, dim=1).flatten()
    sequence_starts = torch.stack(starts, dim=1).flatten()
    replay_values, replay_log_probs, _ = policy.evaluate_actions(
        sequence_obs, sequence_actions, RNNStates(initial, initial), sequence_starts
    )
    torch.testing.assert_close(replay_log_probs.detach(), torch.stack(log_probs, dim=1).flatten())
    torch.testing.assert_close(replay_values.detach().flatten(), torch.stack(values, dim=1).flatten())


def test_the_rl_loss_reaches_the_memory_through_the_sequence(model):
    policy = model.policy
    obs = policy.obs_to_tensor(model.env.reset())[0]
    obs = {key: value.repeat_interleave(4, dim=0) for key, value in obs.items()}  # 2 sequences of 4 steps
    states = (torch.zeros(1, 2, policy.state_half), torch.zeros(1, 2, policy.state_half))
    starts = torch.tensor([1.0, 0, 0, 0, 1.0, 0, 0, 0])
    values, log_prob, _ = policy.evaluate_actions(obs, torch.zeros(8), RNNStates(states, states), starts)
    (log_prob.sum() + values.sum()).backward()
    for name in ("memory.theta_bar", "memory.stream_lr_raw", "memory.read_lr_raw", "query.0.weight"):
        gradient = policy.memory_cell.get_parameter(name).grad
        assert gradient is not None and torch.isfinite(gradient).all() and gradient.abs().sum() > 0, name


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("policy_kwargs.memory.grad_mode=third_order", "grad_mode must be one of"),
        ("policy_kwargs.memory.fast_unit=3", "Unknown memory key 'fast_unit'. Did you mean 'fast_units'"),
    ],
)
def test_policy_rejects_a_bad_memory(override, message):
    agent = get_agent("ppo_ebmm_recurrent")
    config = load_config(agent, ENV_ID, overrides=[*TINY, override])
    _, kwargs = split_config(config, agent)
    env = make_vec_env(agent, ENV_ID, config, n_envs=1, seed=0)
    try:
        with pytest.raises(ValueError, match=message):
            agent.algorithm(env=env, device="cpu", **kwargs)
    finally:
        env.close()


@pytest.mark.parametrize(
    ("name", "encoder"), [("box", FlattenExtractor), ("discrete", FlattenExtractor), ("dict", CombinedExtractor)]
)
def test_any_observation_space_gets_sb3s_encoder_and_trains(name, encoder):
    env = DummyVecEnv([lambda: CountingEnv(SPACES[name], length=5)] * 2)
    model = EBMMRecurrentPPO(
        EBMMRecurrentPolicy, env, n_steps=8, batch_size=16, n_epochs=1, seed=0,
        policy_kwargs=dict(net_arch=[16], memory=dict(pattern_dim=8, hidden=8, fast_units=4, hop_dim=8)),
    )  # fmt: skip
    assert type(model.policy.features_extractor) is encoder
    before = model.policy.memory.theta_bar.detach().clone()
    model.learn(16)
    assert not torch.equal(before, model.policy.memory.theta_bar), "the RL loss must train the memory"


# ---------------------------------------------------------------------------------------------------- the agent
def test_learn_logs_the_memory_and_trains_it(model, tmp_path):
    model.set_logger(configure(str(tmp_path), ["csv"]))
    theta_bar = model.policy.memory.theta_bar.detach().clone()
    model.learn(64)
    assert model.num_timesteps == 64
    assert not torch.allclose(theta_bar, model.policy.memory.theta_bar)
    header = (tmp_path / "progress.csv").read_text().splitlines()[0].split(",")
    for key in ("memory/reconstruction_loss", "memory/stream_step_size", "memory/beta", "memory/fast_weight_offset"):
        assert key in header


def test_save_load_predict_with_state(model, tmp_path):
    model.learn(32)
    env = model.env
    obs = env.reset()
    episode_start = np.ones(env.num_envs, dtype=bool)
    state = None
    trajectory = []
    for _ in range(3):
        action, state = model.predict(obs, state=state, episode_start=episode_start, deterministic=True)
        trajectory.append((obs, episode_start, action, state))
        obs, _, episode_start, _ = env.step(action)
    assert state[0].shape == state[1].shape == (1, env.num_envs, model.policy.state_half)
    model.save(tmp_path / "model.zip")
    loaded = EBMMRecurrentPPO.load(tmp_path / "model.zip", device="cpu")
    assert loaded.policy_kwargs == model.policy_kwargs
    assert loaded.policy.memory_size == model.policy.memory_size
    assert loaded.policy.transition_patterns == model.policy.transition_patterns
    state = None
    for obs, episode_start, action, expected in trajectory:
        loaded_action, state = loaded.predict(obs, state=state, episode_start=episode_start, deterministic=True)
        np.testing.assert_array_equal(loaded_action, action)
        np.testing.assert_allclose(state[0], expected[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(state[1], expected[1], rtol=1e-5, atol=1e-6)


def test_predict_at_episode_start_ignores_the_state_passed_in(model):
    obs = model.env.reset()
    start = np.ones(model.env.num_envs, dtype=bool)
    _, from_zero = model.predict(obs, state=None, episode_start=start)
    junk = tuple(np.random.default_rng(0).normal(size=from_zero[0].shape).astype(np.float32) for _ in range(2))
    _, from_junk = model.predict(obs, state=junk, episode_start=start)
    np.testing.assert_allclose(from_junk[0], from_zero[0], rtol=1e-5, atol=1e-6)
