"""Config loading: layering, ``--set`` parsing, validation with suggestions and class-path resolution."""

from __future__ import annotations

import pytest
import torch
import yaml
from stable_baselines3 import PPO
from stable_baselines3.common.utils import LinearSchedule

from ebmm_rl.agents import Agent, get_agent
from ebmm_rl.runs.config import (
    algorithm_arguments,
    apply_overrides,
    import_object,
    load_config,
    parse_override,
    split_config,
    valid_keys,
)


@pytest.fixture
def ppo():
    return get_agent("ppo")


def test_env_section_overrides_default_and_aliases_match(ppo):
    short = load_config(ppo, "EBMM-MemoryShort-v0")
    long = load_config(ppo, "EBMM-MemoryLong")  # alias of EBMM-MemoryLong-v0
    assert short["n_steps"] == 128
    assert "policy" not in short  # SB3's policy for the env's observation space (ebmm_rl.runs.experiment.default_policy)
    assert (long["n_steps"], long["gamma"], long["n_timesteps"]) == (512, 0.995, 5_000_000)
    assert long["policy_kwargs"] == short["policy_kwargs"]  # from default
    unlisted = load_config(ppo, "MiniGrid-MemoryS9-v0")  # no section: default only
    assert unlisted["n_timesteps"] == 1_000_000


def test_layers_apply_in_order(ppo, tmp_path):
    flat = tmp_path / "flat.yml"
    flat.write_text("learning_rate: 1e-3\nn_epochs: 2\npolicy_kwargs: {activation_fn: torch.nn.ReLU}\n")
    config = load_config(ppo, "EBMM-MemoryShort", flat, ["n_epochs=3", "policy_kwargs.net_arch=[8, 8]"])
    assert config["learning_rate"] == 1e-3  # YAML's 1e-3 read as a float
    assert config["n_epochs"] == 3  # --set beats --config
    assert config["policy_kwargs"] == {  # nested merge
        "net_arch": [8, 8],
        "optimizer_kwargs": {"eps": 1e-5, "fused": True},
        "activation_fn": "torch.nn.ReLU",
    }

    keyed = tmp_path / "keyed.yml"
    keyed.write_text("default: {n_epochs: 5}\nEBMM-MemoryShort: {n_epochs: 6}\nEBMM-MemoryLong-v0: {n_epochs: 7}\n")
    assert load_config(ppo, "EBMM-MemoryShort-v0", keyed)["n_epochs"] == 6
    assert load_config(ppo, "MiniGrid-Memory", keyed)["n_epochs"] == 5


def test_saved_config_reloads_to_the_same_config(ppo, tmp_path):
    config = load_config(ppo, "EBMM-MemoryShort", overrides=["learning_rate=lin_3e-4", "ent_coef=0.0"])
    saved = tmp_path / "config.yml"
    saved.write_text(yaml.safe_dump(config, sort_keys=False))
    assert load_config(ppo, "EBMM-MemoryShort", saved) == config


@pytest.mark.parametrize(
    ("item", "key", "value"),
    [
        ("learning_rate=3e-4", "learning_rate", 3e-4),
        ("n_steps=64", "n_steps", 64),
        ("policy_kwargs.net_arch=[64, 64]", "policy_kwargs.net_arch", [64, 64]),
        ("policy_kwargs.features_extractor_kwargs.write=stream", "policy_kwargs.features_extractor_kwargs.write", "stream"),
        ("normalize_advantage=false", "normalize_advantage", False),
        ("target_kl=null", "target_kl", None),
        ("env_kwargs={agent_view_size: 5}", "env_kwargs", {"agent_view_size": 5}),
    ],
)
def test_parse_override(item, key, value):
    assert parse_override(item) == (key, value)


@pytest.mark.parametrize("item", ["learning_rate", "=1", "policy_kwargs..net_arch=[1]", ".a=1", "n_steps=[1"])
def test_bad_override_syntax(item):
    with pytest.raises(ValueError, match="Bad override"):
        parse_override(item)


def test_dotted_override_through_a_scalar_fails():
    with pytest.raises(ValueError, match=r"'n_steps' is 128, not a mapping"):
        apply_overrides({"n_steps": 128}, ["n_steps.size=3"])


def test_dotted_override_creates_mappings():
    assert apply_overrides({}, ["a.b.c=1"]) == {"a": {"b": {"c": 1}}}


def test_unknown_key_names_the_key_the_valid_keys_and_a_suggestion(ppo):
    with pytest.raises(ValueError, match=r"unknown key 'n_step' .*Did you mean 'n_steps'.*Valid keys: policy, learning_rate"):
        load_config(ppo, "EBMM-MemoryShort", overrides=["n_step=64"])


def test_unknown_key_in_a_config_file_names_the_file(ppo, tmp_path):
    path = tmp_path / "typo.yml"
    path.write_text("learning_rat: 1e-3\n")
    with pytest.raises(ValueError, match=r"typo\.yml: unknown key 'learning_rat'.*Did you mean 'learning_rate'"):
        load_config(ppo, "EBMM-MemoryShort", path)


def test_unknown_env_id_suggests_one(ppo):
    with pytest.raises(ValueError, match=r"Unknown env id 'EBMM-MemoryShrt': did you mean 'EBMM-MemoryShort'"):
        load_config(ppo, "EBMM-MemoryShrt")


def test_unknown_env_section_in_a_file_suggests_one(ppo, tmp_path):
    path = tmp_path / "keyed.yml"
    path.write_text("default: {n_epochs: 5}\nEBMM-MemoryShrt: {n_epochs: 6}\n")
    with pytest.raises(ValueError, match=r"key 'EBMM-MemoryShrt' is neither 'default' nor an env id.*'EBMM-MemoryShort'"):
        load_config(ppo, "EBMM-MemoryShort", path)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seed=1", "it is set by the --seed option"),
        ("device=cuda", "it is set by the --device option"),
        ("n_envs=0", "n_envs must be a positive integer"),
        ("n_timesteps=1.5", "n_timesteps must be a positive integer"),
        ("env_kwargs=3", "env_kwargs must be a mapping"),
        ("env_kwargs.oracle=true", "env_kwargs may not set 'oracle'"),
        ("window=4", "unknown key 'window'"),
        ("novelty_bonus=-0.1", "novelty_bonus must be a number >= 0"),
        ("novelty_bonus_steps=0", "novelty_bonus_steps must be a positive integer"),
        ("novelty_bonus=0.01", "sets novelty_bonus but not novelty_bonus_steps"),
    ],
)
def test_bad_values(ppo, override, message):
    with pytest.raises(ValueError, match=message):
        load_config(ppo, "EBMM-MemoryShort", overrides=[override])


def test_window_is_a_key_of_windowed_agents_only(ppo):
    framestack = get_agent("ppo_framestack")
    assert "window" in valid_keys(framestack)
    assert "window" not in valid_keys(ppo)
    assert load_config(framestack, "EBMM-MemoryShort", overrides=["window=8"])["window"] == 8


def test_algorithm_arguments_follow_kwargs_to_the_base_class():
    class WithExtra(PPO):
        def __init__(self, *args, extra_weight: float = 1.0, **kwargs):
            self.extra_weight = extra_weight
            super().__init__(*args, **kwargs)

    arguments = algorithm_arguments(WithExtra)
    assert arguments[0] == "extra_weight"
    assert {"policy", "n_steps", "learning_rate", "policy_kwargs"} <= set(arguments)
    agent = Agent(name="with_extra", algorithm=WithExtra, policy="MultiInputPolicy", description="", window=8)
    assert {"extra_weight", "window", "n_envs"} <= set(valid_keys(agent))
    assert "seed" not in valid_keys(agent)


def test_split_config_imports_class_paths_and_schedules(ppo):
    config = load_config(
        ppo,
        "EBMM-MemoryShort",
        overrides=["policy_kwargs.activation_fn=torch.nn.Tanh", "learning_rate=lin_1e-3", "env_kwargs.agent_view_size=5"],
    )
    run, kwargs = split_config(config, ppo)
    assert run == {"n_envs": 8, "n_timesteps": 1_000_000, "env_kwargs": {"agent_view_size": 5}}
    assert kwargs["policy_kwargs"]["activation_fn"] is torch.nn.Tanh
    assert isinstance(kwargs["learning_rate"], LinearSchedule)
    assert kwargs["learning_rate"](1.0) == pytest.approx(1e-3)
    assert kwargs["learning_rate"](0.0) == pytest.approx(0.0)
    assert config["policy_kwargs"]["activation_fn"] == "torch.nn.Tanh"  # the config itself stays serialisable


def test_import_object_errors_name_the_key():
    assert import_object("torch.nn.Tanh") is torch.nn.Tanh
    assert import_object("stable_baselines3.PPO.load") == PPO.load
    with pytest.raises(ValueError, match=r"Cannot import 'torch.nn.Tanhh' \(config key 'policy_kwargs.activation_fn'\)"):
        import_object("torch.nn.Tanhh", "policy_kwargs.activation_fn")
