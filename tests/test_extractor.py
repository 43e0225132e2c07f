"""EBMMExtractor inside SB3 policies on any observation space, and the ppo_ebmm agent's algorithm."""

from __future__ import annotations

import functools
import subprocess
import sys

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import A2C, DQN, PPO, SAC
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.torch_layers import CombinedExtractor, FlattenExtractor, NatureCNN
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import DummyVecEnv

from ebmm_rl import EBMMExtractor, envs
from ebmm_rl.agents.ppo_ebmm import EBMMPPO
from ebmm_rl.sb3 import MiniGridEncoder, VecEpisodicWindow
from ebmm_rl.sb3.extractor import distinct_rows, hash_weights
from test_window import SPACES, CountingEnv

ENV_ID = "EBMM-MemoryShort-v0"
WINDOW = 4
TINY_MEMORY = dict(pattern_dim=8, hidden=8, fast_units=4, hop_dim=8)
TINY = dict(
    features_dim=16,
    memory=TINY_MEMORY,
    encoder_class=MiniGridEncoder,
    encoder_kwargs=dict(features_dim=8, hidden=16),
)


def vec_env(n_envs: int = 2):
    return VecEpisodicWindow(make_vec_env(lambda: envs.make_env(ENV_ID), n_envs=n_envs, seed=0), window=WINDOW)


def policy_kwargs(**extractor_kwargs) -> dict:
    return dict(features_extractor_class=EBMMExtractor, features_extractor_kwargs={**TINY, **extractor_kwargs}, net_arch=[16])


def observations(env, n: int) -> dict[str, torch.Tensor]:
    env.reset()
    batch = [env.step(np.zeros(env.num_envs, dtype=int))[0] for _ in range(n)]
    return {key: torch.as_tensor(np.concatenate([obs[key] for obs in batch])) for key in batch[0]}


@pytest.mark.parametrize("write", ["batch", "stream"])
def test_features_shape_and_memory_size(write):
    env = vec_env()
    extractor = EBMMExtractor(env.observation_space, write=write, **TINY)
    assert extractor.memory_size == 4 * (8 + 1)
    model = PPO("MultiInputPolicy", env, n_steps=8, batch_size=8, policy_kwargs=policy_kwargs(write=write))
    obs = obs_as_tensor(env.reset(), model.device)
    features = model.policy.extract_features(obs, model.policy.features_extractor)
    assert features.shape == (2, 16)


def test_without_the_pattern_layer_the_encoders_features_are_the_stored_patterns():
    env = vec_env()
    extractor = EBMMExtractor(env.observation_space, pattern_layer=False, **TINY)
    slots, _ = extractor.raw_slots(observations(env, 3))
    preprocessed = {key: preprocess_obs(slots[key], extractor.current_spaces[key]) for key in slots}
    torch.testing.assert_close(extractor.encode(slots), extractor.encoder(preprocessed))
    assert not any("pattern_head" in name for name, _ in extractor.named_parameters())
    model = PPO("MultiInputPolicy", env, n_steps=8, batch_size=8, policy_kwargs=policy_kwargs(pattern_layer=False))
    assert model.policy.features_extractor_kwargs["pattern_layer"] is False  # saved with the model, so load rebuilds it
    with pytest.raises(ValueError, match=r"features_dim \(16\) must equal the memory's pattern_dim \(8\)"):
        EBMMExtractor(env.observation_space, pattern_layer=False, **{**TINY, "encoder_kwargs": dict(features_dim=16)})


def test_an_env_without_the_window_gets_the_line_that_adds_it():
    for space in (envs.make_env(ENV_ID).observation_space, spaces.Box(0, 1, (3,))):
        with pytest.raises(ValueError, match=r"env = VecEpisodicWindow\(env, window=16\)"):
            EBMMExtractor(space)


@pytest.mark.parametrize(
    ("name", "encoder"),
    [
        ("box", FlattenExtractor),
        ("image", NatureCNN),
        ("discrete", FlattenExtractor),
        ("multi_discrete", FlattenExtractor),
        ("multi_binary", FlattenExtractor),
        ("dict", CombinedExtractor),
    ],
)
def test_any_observation_space_gets_sb3s_encoder_and_trains(name: str, encoder: type):
    # The image env is channel-last: SB3 transposes the current image (VecTransposeImage), not its 4-d window.
    env = VecEpisodicWindow(DummyVecEnv([lambda: CountingEnv(SPACES[name], length=5)] * 2), window=3)
    model = PPO("MultiInputPolicy", env, n_steps=8, batch_size=8, n_epochs=1, seed=0, policy_kwargs=policy_kwargs(
        encoder_class=None, encoder_kwargs={"features_dim": 8} if encoder is NatureCNN else None
    ))  # fmt: skip
    extractor = model.policy.features_extractor
    assert type(extractor.encoder) is encoder
    obs = model.policy.obs_to_tensor(model.env.reset())[0]
    slots, _ = extractor.raw_slots(preprocess_obs(obs, model.observation_space))
    for key, values in slots.items():  # the current observation is the window's last slot, as the env returned it
        torch.testing.assert_close(values.reshape(2, 3, *values.shape[1:])[:, -1], obs[key].float())
    before = extractor.memory.theta_bar.detach().clone()
    model.learn(16)
    assert not torch.equal(before, extractor.memory.theta_bar), "the RL loss must train the memory"


def test_sb3s_orthogonal_init_does_not_reach_the_memory():
    model = PPO("MultiInputPolicy", vec_env(), n_steps=8, batch_size=16, policy_kwargs=policy_kwargs())  # ortho_init=True
    extractor = model.policy.features_extractor
    assert not extractor.head[0].bias.any(), "SB3's init reaches the extractor's own layers"
    linears = [module for module in extractor.memory.modules() if isinstance(module, torch.nn.Linear)]
    for linear in linears:  # SB3's init would make them orthogonal (gain sqrt 2): W W^T = 2 I
        gram = linear.weight @ linear.weight.T
        assert not torch.allclose(gram, 2 * torch.eye(len(gram)), atol=1e-4)
    memory = {name: value.clone() for name, value in extractor.memory.state_dict().items()}
    extractor.apply(functools.partial(BasePolicy.init_weights, gain=np.sqrt(2)))
    assert all(torch.equal(memory[name], value) for name, value in extractor.memory.state_dict().items())
    extractor.apply(lambda module: torch.nn.init.zeros_(module.weight) if isinstance(module, torch.nn.Linear) else None)
    assert not any(linear.weight.any() for linear in linears), "any other function reaches the memory"


def test_features_depend_on_valid_window_entries_only():
    torch.manual_seed(0)
    env = vec_env(n_envs=1)
    extractor = EBMMExtractor(env.observation_space, **TINY)
    env.reset()
    for _ in range(2):
        obs, *_ = env.step(np.array([2]))
    batch = preprocess_obs(obs_as_tensor(obs, "cpu"), env.observation_space)
    assert batch["window_mask"].tolist() == [[0.0, 1.0, 1.0, 1.0]]
    with torch.no_grad():
        base = extractor(batch)
        padded = dict(batch, window_image=batch["window_image"].clone())
        padded["window_image"][:, 0] = 5.0  # an invalid (padding) entry
        assert torch.allclose(extractor(padded), base, atol=1e-6)
        changed = dict(batch, window_image=batch["window_image"].clone())
        changed["window_image"][:, 1] = 5.0  # the oldest valid entry: only the memory holds it
        assert not torch.allclose(extractor(changed), base, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.long, torch.float32])
def test_distinct_rows_are_exact(dtype):
    generator = torch.Generator().manual_seed(0)
    pool = torch.randn(30, 9, generator=generator).mul(1000).to(dtype)
    pool[1] = pool[0]
    pool[1, 8] = pool[0, 8] + 1  # differs in the last entry only
    symbols = pool[torch.randint(0, 30, (500,), generator=generator)]
    first, row = distinct_rows(symbols)
    assert torch.equal(symbols[first][row], symbols)
    assert first.shape[0] == torch.unique(symbols, dim=0).shape[0]
    assert torch.equal(row[first], torch.arange(first.shape[0]))  # first occurrences are their own rows
    # The same matrix given as column blocks of mixed dtypes (an observation's keys) groups the same way.
    blocks_first, blocks_row = distinct_rows(symbols[:, :5], symbols[:, 5:].double())
    assert torch.equal(symbols[blocks_first][blocks_row], symbols) and blocks_first.shape == first.shape


def test_distinct_rows_that_share_a_hash_stay_apart():
    weights = hash_weights(4, torch.zeros(0))
    colliding = torch.zeros(2, 4)
    colliding[0, 1], colliding[1, 2] = weights[2], weights[1]  # both hash to weights[1] * weights[2]
    assert torch.equal(colliding[0] @ weights, colliding[1] @ weights)
    rows = colliding[[0, 1, 1, 0]]
    first, row = distinct_rows(rows)
    assert torch.equal(rows[first][row], rows) and sorted(first.tolist()) == [0, 1]
    first, row = distinct_rows(rows[:, :2], rows[:, 2:])  # as column blocks: the same weights, the same collision
    assert torch.equal(rows[first][row], rows) and sorted(first.tolist()) == [0, 1]


@pytest.mark.parametrize("write", ["batch", "stream"])
def test_distinct_encoding_computes_the_same_features_and_gradients(write):
    torch.manual_seed(0)
    env = vec_env(n_envs=4)
    extractor = EBMMExtractor(env.observation_space, write=write, **TINY)
    batch = preprocess_obs(observations(env, 6), env.observation_space)  # 24 windows repeating a few observations
    distinct, mask = extractor.encode_window(batch, distinct=True)
    every, _ = extractor.encode_window(batch, distinct=False)
    assert distinct.rows.shape[0] < every.rows.shape[0] == 24 * WINDOW
    assert torch.unique(torch.cat([distinct.index, mask.long()], dim=1), dim=0).shape[0] < 24  # equal windows too
    assert torch.allclose(distinct.dense(), every.dense(), atol=1e-6)
    gradients = {}
    for form in (True, False):
        extractor.zero_grad()
        torch.manual_seed(1)  # the memory objective's noisy queries
        (extractor._features(batch, distinct=form).pow(2).sum() + extractor.memory_loss(batch)).backward()
        gradients[form] = [parameter.grad.clone() for parameter in extractor.parameters() if parameter.grad is not None]
    assert len(gradients[True]) == len(gradients[False]) > 10
    for with_distinct, without in zip(gradients[True], gradients[False], strict=True):
        assert torch.allclose(with_distinct, without, atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        acting = extractor(batch)  # no graph: every observation encoded, in inference mode
    assert torch.allclose(acting, extractor(batch), atol=1e-6)


@pytest.mark.parametrize("algorithm", [PPO, A2C])
def test_tiny_learn_with_sb3_algorithms(algorithm):
    kwargs = dict(n_steps=8, batch_size=8) if algorithm is PPO else dict(n_steps=8)
    model = algorithm("MultiInputPolicy", vec_env(), policy_kwargs=policy_kwargs(), seed=0, **kwargs)
    before = model.policy.features_extractor.memory.theta_bar.detach().clone()
    model.learn(32)
    assert not torch.equal(before, model.policy.features_extractor.memory.theta_bar), "the RL loss must train the memory"


def test_ebmm_ppo_trains_the_memory_objective_and_logs_it(tmp_path):
    model = EBMMPPO(
        "MultiInputPolicy", vec_env(), n_steps=8, batch_size=8, n_epochs=1, memory_loss_weight=1.0,
        policy_kwargs=policy_kwargs(write="stream"), seed=0,
    )  # fmt: skip
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(32)
    logged = (tmp_path / "progress.csv").read_text().splitlines()[0].split(",")
    for key in ("memory/reconstruction_loss", "memory/read_step_size", "memory/beta", "train/loss"):
        assert key in logged
    with pytest.raises(ValueError, match="features_extractor_class=EBMMExtractor"):
        EBMMPPO("MultiInputPolicy", vec_env(), n_steps=8, batch_size=8)
    with pytest.raises(ValueError, match="memory_loss_weight"):
        EBMMPPO("MultiInputPolicy", vec_env(), memory_loss_weight=-1.0, policy_kwargs=policy_kwargs())


@pytest.mark.parametrize(("memory_loss_batches", "expected_calls"), [(None, 4), (1, 1)])
def test_memory_objective_trains_on_as_many_minibatches_as_asked(memory_loss_batches, expected_calls):
    model = EBMMPPO(
        "MultiInputPolicy", vec_env(), n_steps=8, batch_size=4, n_epochs=1, memory_loss_batches=memory_loss_batches,
        policy_kwargs=policy_kwargs(), seed=0,
    )  # fmt: skip
    sizes = []
    memory_loss = model.memory_loss
    model.memory_loss = lambda rollout_data: sizes.append(len(rollout_data.actions)) or memory_loss(rollout_data)
    model.learn(16)  # one rollout of 2 envs x 8 steps: 4 minibatches of 4
    assert sizes == [4] * expected_calls
    with pytest.raises(ValueError, match="memory_loss_batches must be >= 1 or None"):
        EBMMPPO("MultiInputPolicy", vec_env(), memory_loss_batches=0, policy_kwargs=policy_kwargs())


def test_save_load_round_trip_and_predict_in_a_new_process(tmp_path):
    env = vec_env()
    model = EBMMPPO(
        "MultiInputPolicy", env, n_steps=8, batch_size=8, memory_loss_weight=0.5,
        policy_kwargs=policy_kwargs(write="stream", n_queries=2, memory={**TINY_MEMORY, "gradient_penalty": False}), seed=0,
    )  # fmt: skip
    model.learn(16)
    path = tmp_path / "model.zip"
    model.save(path)
    obs = env.reset()
    expected, _ = model.predict(obs, deterministic=True)

    loaded = EBMMPPO.load(path, env=env)
    extractor = loaded.policy.features_extractor
    assert isinstance(extractor, EBMMExtractor)
    assert (extractor.write, extractor.n_queries, loaded.memory_loss_weight) == ("stream", 2, 0.5)
    assert extractor.memory.gradient_penalty is False and extractor.memory.dim == 8
    assert np.array_equal(loaded.predict(obs, deterministic=True)[0], expected)

    np.save(tmp_path / "obs.npy", obs, allow_pickle=True)
    script = (
        "import numpy as np; from ebmm_rl.agents.ppo_ebmm import EBMMPPO; "
        f"obs = np.load({str(tmp_path / 'obs.npy')!r}, allow_pickle=True).item(); "
        f"print(EBMMPPO.load({str(path)!r}).predict(obs, deterministic=True)[0].tolist())"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == str(expected.tolist())


@pytest.mark.parametrize(
    ("algorithm", "env_id", "kwargs"),
    [
        (PPO, "CartPoleNoVel-v1", dict(n_steps=8, batch_size=16, n_epochs=1)),
        (A2C, "CartPoleNoVel-v1", dict(n_steps=8)),
        (DQN, "CartPoleNoVel-v1", dict(learning_starts=8, buffer_size=64, batch_size=8)),
        (SAC, "PendulumNoVel-v1", dict(learning_starts=8, buffer_size=64, batch_size=8)),
    ],
)
def test_every_sb3_algorithm_trains_saves_and_loads_in_a_new_process(algorithm, env_id, kwargs, tmp_path):
    envs.register_envs()
    env = VecEpisodicWindow(make_vec_env(env_id, n_envs=2, seed=0), window=3)
    extractor_kwargs = dict(features_dim=16, memory=TINY_MEMORY, n_queries=2)
    model = algorithm(
        "MultiInputPolicy", env, seed=0, **kwargs,
        policy_kwargs=dict(features_extractor_class=EBMMExtractor, features_extractor_kwargs=extractor_kwargs, net_arch=[16]),
    )  # fmt: skip
    model.learn(32)
    path = tmp_path / "model.zip"
    model.save(path)
    obs = env.reset()
    expected, _ = model.predict(obs, deterministic=True)

    np.save(tmp_path / "obs.npy", obs, allow_pickle=True)
    script = (
        f"import numpy as np; from stable_baselines3 import {algorithm.__name__} as Algorithm; "
        f"obs = np.load({str(tmp_path / 'obs.npy')!r}, allow_pickle=True).item(); model = Algorithm.load({str(path)!r}); "
        "assert model.policy.features_extractor_kwargs['memory']['pattern_dim'] == 8; "
        f"np.save({str(tmp_path / 'actions.npy')!r}, model.predict(obs, deterministic=True)[0])"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    np.testing.assert_allclose(np.load(tmp_path / "actions.npy"), expected, rtol=1e-5)
