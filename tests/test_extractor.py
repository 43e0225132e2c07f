"""EBMMExtractor inside SB3 policies, and the ppo_ebmm agent's algorithm."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.utils import obs_as_tensor

from ebmm_rl import envs
from ebmm_rl.agents.ppo_ebmm import EBMMPPO
from ebmm_rl import EBMMExtractor
from ebmm_rl.sb3.extractor import distinct_rows

ENV_ID = "EBMM-MemoryShort-v0"
WINDOW = 4
TINY = dict(features_dim=16, pattern_dim=8, encoder_hidden=16, memory_hidden=8, fast_units=4, hop_dim=8)


def vec_env(n_envs: int = 2):
    return make_vec_env(lambda: envs.make_env(ENV_ID, window=WINDOW), n_envs=n_envs, seed=0)


def policy_kwargs(**extractor_kwargs) -> dict:
    return dict(
        features_extractor_class=EBMMExtractor,
        features_extractor_kwargs={**TINY, **extractor_kwargs},
        net_arch=[16],
        ortho_init=False,
    )


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


def test_unknown_observation_layout_names_the_wrapper():
    plain = envs.make_env(ENV_ID)
    with pytest.raises(ValueError, match=r"make_env\(env_id, window=T\)"):
        EBMMExtractor(plain.observation_space)
    with pytest.raises(ValueError, match="window_mask"):
        EBMMExtractor(spaces.Box(0, 1, (3,)))


def test_features_depend_on_valid_window_entries_only():
    torch.manual_seed(0)
    env = envs.make_env(ENV_ID, window=WINDOW)
    extractor = EBMMExtractor(env.observation_space, **TINY)
    obs, _ = env.reset(seed=0)
    for _ in range(2):
        obs, *_ = env.step(2)
    batch = {key: torch.as_tensor(np.asarray(value))[None].float() for key, value in obs.items()}
    batch["direction"] = torch.nn.functional.one_hot(batch["direction"].long(), 4).float()
    assert batch["window_mask"].tolist() == [[0.0, 1.0, 1.0, 1.0]]
    with torch.no_grad():
        base = extractor(batch)
        padded = dict(batch, window_image=batch["window_image"].clone())
        padded["window_image"][:, 0] = 5.0  # an invalid (padding) entry
        assert torch.allclose(extractor(padded), base, atol=1e-6)
        changed = dict(batch, window_image=batch["window_image"].clone())
        changed["window_image"][:, 1] = 5.0  # the oldest valid entry: only the memory holds it
        assert not torch.allclose(extractor(changed), base, atol=1e-4)


@pytest.mark.parametrize("view", [3, 7])  # 10 and 50 symbols: two and several packed words
def test_distinct_observations_are_found_exactly(view):
    env = envs.make_env(ENV_ID, window=WINDOW)
    encoder = EBMMExtractor(env.observation_space, **TINY).encoder
    generator = torch.Generator().manual_seed(0)
    # 200 observations drawn from 12 (some differing in one cell channel only), one with indices beyond the tables,
    # which the encoder clips: it must share the row of its clipped twin.
    pool = torch.randint(0, 3, (12, view, view, 3), generator=generator).float()
    pool[1] = pool[0]
    pool[1, 2, 2, 2] += 1
    pick = torch.randint(0, 12, (200,), generator=generator)
    images, directions = pool[pick], torch.randint(0, 4, (12,), generator=generator)[pick].float()
    images[0], images[1] = pool[3], pool[3]
    images[1, 0, 0, 0] = 250.0
    images[0, 0, 0, 0] = float(encoder.index_high[0])
    directions[1] = directions[0]
    first, row = encoder.distinct(images, directions)
    seen = torch.cat([encoder.clamp_indices(images).flatten(1), directions.long()[:, None]], dim=1)
    assert torch.equal(seen[first][row], seen)
    assert first.shape[0] == torch.unique(seen, dim=0).shape[0] <= 13  # the 12, and pool[3] with its first index changed
    assert row[0] == row[1]
    if view == 3:
        assert torch.equal(encoder(images[first][row], directions[first][row]), encoder(images, directions))


@pytest.mark.parametrize("symbol_bits", [2, 20])  # many symbols to a word, and one or two
def test_distinct_rows_are_exact(symbol_bits):
    generator = torch.Generator().manual_seed(0)
    pool = torch.randint(0, 2**symbol_bits, (30, 9), generator=generator)
    pool[1] = pool[0]
    pool[1, 8] = (pool[0, 8] + 1) % 2**symbol_bits  # differs in the last symbol only
    symbols = pool[torch.randint(0, 30, (500,), generator=generator)]
    first, row = distinct_rows(symbols, symbol_bits)
    assert torch.equal(symbols[first][row], symbols)
    assert first.shape[0] == torch.unique(symbols, dim=0).shape[0]
    assert torch.equal(row[first], torch.arange(first.shape[0]))  # first occurrences are their own rows


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
    for key in ("memory/reconstruction_loss", "memory/read_step_size", "memory/alpha", "train/loss"):
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
        policy_kwargs=policy_kwargs(write="stream", n_queries=2, gradient_penalty=False), seed=0,
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
    assert extractor.memory.gradient_penalty is False
    assert np.array_equal(loaded.predict(obs, deterministic=True)[0], expected)

    np.save(tmp_path / "obs.npy", obs, allow_pickle=True)
    script = (
        "import numpy as np; from ebmm_rl.agents.ppo_ebmm import EBMMPPO; "
        f"obs = np.load({str(tmp_path / 'obs.npy')!r}, allow_pickle=True).item(); "
        f"print(EBMMPPO.load({str(path)!r}).predict(obs, deterministic=True)[0].tolist())"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == str(expected.tolist())
