"""The online EBMM: one streaming write and one read per time step, the fast weights carried as a recurrent state.

Bartunov et al., "Meta-Learning Deep Energy-Based Memory Models", ICLR 2020, name batch writing as EBMM's limitation
and online memory for agents as what relaxing it enables; this cell is that relaxation, used like an ``nn.LSTMCell``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ebmm_rl.memory.ebmm import EBMM, MemoryState


class EBMMCell(nn.Module):
    """One step of an online associative memory: reset the memories whose episode starts (to the learned theta_bar),
    stream-write the new pattern, then read with ``n_queries`` queries computed from it.

    The work per step is one :meth:`EBMM.write_step` and one :meth:`EBMM.read` whatever the number of earlier steps,
    and the state is only the fast weights, ``[batch, memory_size]``.

    :param memory: the EBMM; its patterns must lie in its projection box (queries are ``tanh``, so ``(-1, 1)``)
    :param n_queries: reads per step, each from its own learned query
    """

    def __init__(self, memory: EBMM, n_queries: int = 1) -> None:
        super().__init__()
        if n_queries < 1:
            raise ValueError(f"n_queries must be >= 1, got {n_queries}")
        if memory.projection != (-1.0, 1.0):
            raise ValueError(
                f"EBMMCell computes tanh queries, so the memory must read in the box (-1, 1); got projection "
                f"{memory.projection}: build the EBMM with projection=(-1, 1)"
            )
        self.memory = memory
        self.n_queries = n_queries
        self.query = nn.Sequential(nn.Linear(memory.dim, memory.dim * n_queries), nn.Tanh())

    @property
    def output_dim(self) -> int:
        """Size of one step's output: the pattern and what each query retrieved."""
        return self.memory.dim * (1 + self.n_queries)

    def reset(self, state: MemoryState, episode_start: Tensor) -> MemoryState:
        """Empty the memories of environments whose episode starts now.

        :param episode_start: ``[batch]`` bool
        """
        start = episode_start.to(device=state.weights.device, dtype=torch.bool)[:, None]  # [batch, 1]
        return state._replace(weights=torch.where(start, self.memory.theta_bar.expand_as(state.weights), state.weights))

    def forward(self, pattern: Tensor, state: MemoryState, episode_start: Tensor | None = None) -> tuple[Tensor, MemoryState]:
        """One time step.

        :param pattern: ``[batch, dim]`` this step's pattern
        :param state: the memories before this step, weights ``[batch, memory_size]``
        :param episode_start: ``[batch]`` bool; those memories are reset before the write
        :return: output ``[batch, dim * (1 + n_queries)]`` (the pattern, then each retrieval) and the new state
        """
        if episode_start is not None:
            state = self.reset(state, episode_start)
        state = self.memory.write_step(state, pattern)
        queries = self.query(pattern).reshape(pattern.shape[0], self.n_queries, self.memory.dim)  # [batch, q, dim]
        retrieved = self.memory.read(state, queries)  # [batch, q, dim]
        return torch.cat([pattern, retrieved.flatten(1)], dim=-1), state

    def forward_sequence(
        self, patterns: Tensor, state: MemoryState, episode_starts: Tensor | None = None
    ) -> tuple[Tensor, MemoryState]:
        """:meth:`forward` over time, first step first.

        :param patterns: ``[time, batch, dim]``
        :param episode_starts: ``[time, batch]`` bool
        :return: outputs ``[time, batch, output_dim]`` and the state after the last step
        """
        if patterns.dim() != 3:
            raise ValueError(f"patterns must be [time, batch, dim], got shape {tuple(patterns.shape)}")
        if episode_starts is not None and episode_starts.shape != patterns.shape[:2]:
            raise ValueError(
                f"episode_starts must be [time, batch] = {tuple(patterns.shape[:2])}, got {tuple(episode_starts.shape)}"
            )
        outputs = []
        for step in range(patterns.shape[0]):
            output, state = self(patterns[step], state, None if episode_starts is None else episode_starts[step])
            outputs.append(output)
        return torch.stack(outputs), state
