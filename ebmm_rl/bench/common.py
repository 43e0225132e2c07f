"""What the benchmark scripts share: the device to time on, and an untrained agent on the delay task."""

from __future__ import annotations

import torch

from ebmm_rl.agents import get_agent
from ebmm_rl.runs.config import load_config, split_config
from ebmm_rl.runs.experiment import make_model, make_vec_env

ENV_ID = "EBMM-MemoryDelay-v0"
"""The task the agents' cost is measured on: its hallway sets the episode length."""


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when it is available."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA device; use --device auto or cpu")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a timer read afterwards includes it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_model(agent_name: str, n_envs: int, corridor_length: int, device: torch.device, overrides: list[str], seed: int = 0):
    """An untrained model of an agent with its config for :data:`ENV_ID` (plus ``overrides``, ``key=value``), on envs
    with the given hallway."""
    agent = get_agent(agent_name)
    hallway = [f"env_kwargs.corridor_length={corridor_length}", f"env_kwargs.max_steps={2 * corridor_length + 14}"]
    config = load_config(agent, ENV_ID, overrides=[*hallway, *overrides])
    _, kwargs = split_config(config, agent)
    env = make_vec_env(agent, ENV_ID, config, n_envs=n_envs, seed=seed)
    return make_model(agent, env, kwargs, seed=seed, device=device, verbose=0), env
