"""Baseline associative memories for the image-recall validation suite, compared with EBMM at equal memory size.

Classical Hopfield networks (Hebb, Storkey and pseudo-inverse learning rules), the modern continuous Hopfield network
(Ramsauer et al., "Hopfield Networks is All You Need", ICLR 2021) and a Memory Networks slot memory, as in the
baselines of Bartunov et al., "Meta-Learning Deep Energy-Based Memory Models", ICLR 2020.

Pure torch and batched over memories: every tensor has a leading batch dimension holding independent memories.
Every baseline follows :class:`RecallMemory`: ``write(patterns, mask) -> state``, ``read(state, queries)`` and
``memory_size(n_patterns)``, the number of float32 values one memory stores (the paper's accounting).
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from ebmm_rl.memory.ebmm import WRITE_KINDS, reconstruction_error, resolve_targets
from ebmm_rl.memory.energy import he_init_

HopfieldRule = Literal["hebb", "storkey", "pseudo_inverse"]
HOPFIELD_RULES: tuple[str, ...] = ("hebb", "storkey", "pseudo_inverse")
HopfieldUpdate = Literal["async", "sync"]
HOPFIELD_UPDATES: tuple[str, ...] = ("async", "sync")


@runtime_checkable
class RecallMemory(Protocol):
    """What the recall suite needs from a memory: write a batch of memories, read them, and count their floats."""

    dim: int

    def write(self, patterns: Tensor, mask: Tensor | None = None) -> tuple[Tensor, ...]:
        """:param patterns: ``[batch, n, dim]`` :param mask: ``[batch, n]`` bool :return: the memory state"""
        ...

    def read(self, state: tuple[Tensor, ...], queries: Tensor) -> Tensor:
        """:param queries: ``[batch, m, dim]`` :return: ``[batch, m, dim]``"""
        ...

    def memory_size(self, n_patterns: int) -> int:
        """Number of float32 values one memory stores when ``n_patterns`` are written."""
        ...


class HopfieldState(NamedTuple):
    """The contents of a batch of classical Hopfield networks.

    :param weights: ``[batch, dim, dim]`` symmetric couplings with a zero diagonal
    :param thresholds: ``[batch, dim]`` unit thresholds (zero under all three rules, stored for the accounting)
    """

    weights: Tensor
    thresholds: Tensor


class SlotState(NamedTuple):
    """The contents of a batch of slot memories (one slot per written pattern).

    :param slots: ``[batch, n, slot_size]`` what was stored: the patterns themselves or their codes
    :param written: ``[batch, n]`` bool, False for slots whose pattern was masked out at writing
    """

    slots: Tensor
    written: Tensor


# ---------------------------------------------------------------------------------------------- checks and helpers
def _describe(x: object) -> str:
    return f"tensor of shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__


def _check_patterns(x: Tensor, name: str, dim: int, batch: int | None = None) -> None:
    expected = f"[{'batch' if batch is None else batch}, n, {dim}]"
    if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != dim or x.shape[1] == 0:
        raise ValueError(f"{name} must be a tensor {expected} (batch of memories, patterns, dim), got {_describe(x)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a float tensor, got {x.dtype}; convert it with .float()")
    if batch is not None and x.shape[0] != batch:
        raise ValueError(f"{name} has {x.shape[0]} memories but the state has {batch}; expected {expected}")


def _written_mask(mask: Tensor | None, patterns: Tensor) -> Tensor:
    """The bool ``[batch, n]`` mask of patterns to write (all of them when ``mask`` is None)."""
    shape = tuple(patterns.shape[:2])
    if mask is None:
        return torch.ones(shape, dtype=torch.bool, device=patterns.device)
    if not isinstance(mask, Tensor) or tuple(mask.shape) != shape:
        raise ValueError(f"mask must be a bool tensor of shape {shape} [batch, n], got {_describe(mask)}")
    return mask.to(device=patterns.device, dtype=torch.bool)


def _zero_diagonal(weights: Tensor) -> Tensor:
    """:param weights: ``[batch, dim, dim]`` :return: the same couplings without self-connections"""
    return weights * (1 - torch.eye(weights.shape[-1], dtype=weights.dtype, device=weights.device))


def _sign_keeping_ties(field: Tensor, previous: Tensor) -> Tensor:
    """+-1 by the sign of the local field; a unit with zero field keeps its value (the usual tie rule)."""
    return torch.where(field > 0, 1.0, torch.where(field < 0, -1.0, previous)).to(previous.dtype)


def attend(keys: Tensor, values: Tensor, written: Tensor, queries: Tensor, scale: Tensor | float) -> Tensor:
    """Softmax attention of each query over its own memory's slots: ``values^T softmax(scale * keys query)``.

    A memory without any written slot attends to nothing and reads zeros.

    :param keys: ``[batch, n, key_size]``
    :param values: ``[batch, n, value_size]``
    :param written: ``[batch, n]`` bool, slots that may be attended to
    :param queries: ``[batch, m, key_size]``
    :param scale: inverse temperature of the softmax (float or 0-dim tensor)
    :return: ``[batch, m, value_size]``
    """
    logits = scale * torch.einsum("bmk,bnk->bmn", queries, keys)  # [batch, m, n]
    # The most negative finite value rather than -inf: a memory with no written slot must not produce NaNs, which
    # would poison gradients even through a torch.where that discards them.
    logits = logits.masked_fill(~written[:, None, :], torch.finfo(logits.dtype).min)
    attention = torch.softmax(logits, dim=-1) * written[:, None, :]  # [batch, m, n]
    return torch.einsum("bmn,bnv->bmv", attention, values)


# ---------------------------------------------------------------------------------------------- Hopfield learning rules
def hebb_weights(patterns: Tensor, written: Tensor) -> Tensor:
    """Hebb rule ``W = 1/dim sum_mu x^mu x^mu^T`` without self-connections.

    :param patterns: ``[batch, n, dim]`` +-1 patterns
    :param written: ``[batch, n]`` bool, patterns to store
    :return: ``[batch, dim, dim]``
    """
    stored = patterns * written[..., None]  # [batch, n, dim]
    return _zero_diagonal(torch.einsum("bni,bnj->bij", stored, stored) / patterns.shape[-1])


def storkey_weights(patterns: Tensor, written: Tensor) -> Tensor:
    """Storkey's incremental rule (Storkey, "Increasing the capacity of a Hopfield network without sacrificing
    functionality", ICANN 1997): for each new pattern x,
    ``dW_ij = 1/dim (x_i x_j - x_i h_ji - h_ij x_j)`` with the local fields ``h_ij = sum_{k != i, j} w_ik x_k``.

    Vectorised over memories and units; the loop over patterns is the rule's own order dependence.

    :param patterns: ``[batch, n, dim]`` +-1 patterns, stored first to last
    :param written: ``[batch, n]`` bool, patterns to store
    :return: ``[batch, dim, dim]``
    """
    batch, n_patterns, dim = patterns.shape
    weights = patterns.new_zeros(batch, dim, dim)
    for index in range(n_patterns):
        x = patterns[:, index]  # [batch, dim]
        field = torch.einsum("bij,bj->bi", weights, x)  # h_i = sum_{k != i} w_ik x_k, as the diagonal is zero
        squared = x * x  # [batch, dim]
        # h_ij = h_i - w_ij x_j, so x_i h_ji + h_ij x_j = x_i h_j + h_i x_j - w_ij (x_i^2 + x_j^2) for symmetric W.
        update = (
            x[:, :, None] * x[:, None, :]
            - x[:, :, None] * field[:, None, :]
            - field[:, :, None] * x[:, None, :]
            + weights * (squared[:, :, None] + squared[:, None, :])
        ) / dim  # [batch, dim, dim]
        weights = weights + written[:, index, None, None] * _zero_diagonal(update)
    return weights


def pseudo_inverse_weights(patterns: Tensor, written: Tensor) -> Tensor:
    """Pseudo-inverse (projection) rule ``W = X^+ X``, the projection onto the span of the stored patterns,
    with the self-connections removed (which keeps the stored patterns fixed points while n < dim and widens their
    basins; Kanter & Sompolinsky 1987).

    :param patterns: ``[batch, n, dim]`` +-1 patterns
    :param written: ``[batch, n]`` bool, patterns to store
    :return: ``[batch, dim, dim]``
    """
    # Float64 because the projection is ill-conditioned as n approaches dim; masked patterns become zero rows, which
    # do not change the row space.
    stored = (patterns * written[..., None]).double()  # [batch, n, dim]
    projection = torch.linalg.pinv(stored) @ stored  # [batch, dim, dim]
    return _zero_diagonal(projection.to(patterns.dtype))


HOPFIELD_RULE_WEIGHTS = {"hebb": hebb_weights, "storkey": storkey_weights, "pseudo_inverse": pseudo_inverse_weights}


class HopfieldNetwork:
    """Classical binary Hopfield network on +-1 patterns, one per memory in a batch (Hopfield 1982), with the Hebb,
    Storkey or pseudo-inverse learning rule: the paper's Hopfield baselines.

    Memory: symmetric couplings without self-connections and one threshold per unit, ``dim * (dim - 1) / 2 + dim``
    floats (8,256 for dim 128, the paper's budget for binary strings), whatever the number of stored patterns.
    All three rules leave the thresholds at zero.

    Reading: up to ``sweeps`` sweeps of sign updates ``x_i <- sign(sum_j w_ij x_j - threshold_i)``, stopping early
    once a sweep changes no unit of any query (a fixed point); a unit with zero field keeps its value. "async"
    updates one unit at a time in index order within a sweep, which never increases the energy and so converges;
    "sync" updates all units at once and can end in a 2-cycle. Queries may hold 0 for unknown bits.

    :param dim: pattern size
    :param rule: learning rule: "hebb", "storkey" or "pseudo_inverse"
    :param update: "async" (default) or "sync"
    :param sweeps: maximum number of update sweeps of a read
    """

    def __init__(self, dim: int, rule: HopfieldRule = "hebb", update: HopfieldUpdate = "async", sweeps: int = 10):
        if dim < 2:
            raise ValueError(f"dim must be >= 2 for a Hopfield network, got {dim}")
        if rule not in HOPFIELD_RULES:
            raise ValueError(f"rule must be one of {HOPFIELD_RULES}, got {rule!r}")
        if update not in HOPFIELD_UPDATES:
            raise ValueError(f"update must be one of {HOPFIELD_UPDATES}, got {update!r}")
        if sweeps < 1:
            raise ValueError(f"sweeps must be >= 1, got {sweeps}")
        self.dim = dim
        self.rule = rule
        self.update = update
        self.sweeps = sweeps

    def memory_size(self, n_patterns: int = 0) -> int:
        """``dim * (dim - 1) / 2 + dim``: the couplings above the diagonal and the thresholds (any ``n_patterns``)."""
        return self.dim * (self.dim - 1) // 2 + self.dim

    def write(self, patterns: Tensor, mask: Tensor | None = None) -> HopfieldState:
        """Store patterns with the learning rule.

        :param patterns: ``[batch, n, dim]`` with values in {-1, +1}
        :param mask: ``[batch, n]`` bool, False for patterns that are not stored
        :return: state with weights ``[batch, dim, dim]`` and thresholds ``[batch, dim]``
        """
        _check_patterns(patterns, "patterns", self.dim)
        if not bool((patterns.abs() == 1).all()):
            raise ValueError(
                "Hopfield networks store +-1 patterns but got other values; map {0, 1} data with 2 * x - 1 and "
                "binarise grey images first (e.g. 2 * (x > 0.5) - 1)"
            )
        written = _written_mask(mask, patterns)
        weights = HOPFIELD_RULE_WEIGHTS[self.rule](patterns.detach(), written)
        return HopfieldState(weights, patterns.new_zeros(patterns.shape[0], self.dim))

    def read(self, state: HopfieldState, queries: Tensor) -> Tensor:
        """Retrieve by sign updates from the queries.

        :param state: from :meth:`write`
        :param queries: ``[batch, m, dim]`` with values in [-1, 1] (0 for unknown bits)
        :return: ``[batch, m, dim]`` with values in {-1, +1} (0 only where a unit's field stayed exactly zero)
        """
        if not isinstance(state, HopfieldState):
            raise ValueError(f"state must be a HopfieldState from write(), got {type(state).__name__}")
        weights, thresholds = state
        _check_patterns(queries, "queries", self.dim, weights.shape[0])
        x = queries.detach().clone()  # [batch, m, dim]
        for _ in range(self.sweeps):
            previous = x.clone()
            if self.update == "sync":
                field = torch.einsum("bij,bmj->bmi", weights, x) - thresholds[:, None, :]  # [batch, m, dim]
                x = _sign_keeping_ties(field, x)
            else:
                for unit in range(self.dim):
                    field = torch.einsum("bmj,bj->bm", x, weights[:, unit]) - thresholds[:, None, unit]  # [batch, m]
                    x[..., unit] = _sign_keeping_ties(field, x[..., unit])
            if torch.equal(x, previous):
                break
        return x


class ModernHopfield:
    """Modern continuous Hopfield network (Ramsauer et al., "Hopfield Networks is All You Need", ICLR 2021):
    stores the patterns themselves and retrieves with ``xi <- X^T softmax(beta X xi)``.

    Memory: ``n * dim`` floats, the patterns themselves (it cannot compress). With ``slots`` it keeps only the last
    ``slots`` written patterns, so it fits a fixed memory budget like the other models (the rest are forgotten). One
    update usually converges (Ramsauer et al.); ``iterations`` applies a few. A memory with no written pattern returns
    the queries unchanged.

    :param dim: pattern size
    :param beta: inverse temperature; larger separates stored patterns better (1 suits +-1 strings of 128 bits)
    :param iterations: number of update steps of a read
    :param slots: most patterns kept (the last written), or None for all
    """

    def __init__(self, dim: int, beta: float = 1.0, iterations: int = 3, slots: int | None = None) -> None:
        if dim < 1:
            raise ValueError(f"dim must be a positive pattern size, got {dim}")
        if beta <= 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        if slots is not None and slots < 1:
            raise ValueError(f"slots must be >= 1 (or None to keep every pattern), got {slots}")
        self.dim = dim
        self.beta = beta
        self.iterations = iterations
        self.slots = slots

    def memory_size(self, n_patterns: int) -> int:
        """``kept * dim``: every kept pattern."""
        return (n_patterns if self.slots is None else min(n_patterns, self.slots)) * self.dim

    def write(self, patterns: Tensor, mask: Tensor | None = None) -> SlotState:
        """Store the patterns as they are.

        :param patterns: ``[batch, n, dim]``
        :param mask: ``[batch, n]`` bool, False for patterns that are not stored
        :return: state with slots ``[batch, n, dim]``
        """
        _check_patterns(patterns, "patterns", self.dim)
        written = _written_mask(mask, patterns)
        if self.slots is not None:
            written_from_here = written.flip(1).cumsum(dim=1).flip(1)  # [batch, n] written patterns at or after each
            written = written & (written_from_here <= self.slots)
        return SlotState(patterns, written)

    def read(self, state: SlotState, queries: Tensor) -> Tensor:
        """:param queries: ``[batch, m, dim]`` :return: ``[batch, m, dim]``"""
        if not isinstance(state, SlotState):
            raise ValueError(f"state must be a SlotState from write(), got {type(state).__name__}")
        stored, written = state
        _check_patterns(queries, "queries", self.dim, stored.shape[0])
        x = queries
        for _ in range(self.iterations):
            x = attend(stored, stored, written, x, self.beta)
        return torch.where(written.any(dim=1)[:, None, None], x, queries)


class MemoryNetwork(nn.Module):
    """Memory Networks baseline (Weston et al. 2015; Sukhbaatar et al. 2015, as used by Bartunov et al. 2020): a slot
    memory of learned codes. Writing encodes every pattern with an MLP into a ``code_size`` slot; reading encodes the
    query, attends over the slots with a softmax of dot products at a learned inverse temperature, and decodes the
    attended code with an MLP.

    Memory: ``n * code_size`` floats, the stored codes (encoder, decoder and temperature are slow weights).
    A memory with no written pattern decodes a zero code. Trained by :meth:`meta_loss` like
    :meth:`ebmm_rl.memory.EBMM.meta_loss`, so ``ebmm_rl.memory.meta_train_step`` trains both.

    :param dim: pattern size
    :param code_size: size of one slot; sets the memory size
    :param hidden: width of the encoder and decoder hidden layers
    :param projection: ``(low, high)`` range of the outputs, reached by a scaled sigmoid (``(0, 1)`` for images,
        ``(-1, 1)`` for +-1 strings), or None for an unbounded linear output
    """

    def __init__(
        self, dim: int, code_size: int = 64, hidden: int = 256, projection: tuple[float, float] | None = None
    ) -> None:
        super().__init__()
        if dim < 1 or code_size < 1 or hidden < 1:
            raise ValueError(f"dim, code_size and hidden must be positive, got {dim}, {code_size}, {hidden}")
        if projection is not None and not (len(projection) == 2 and projection[0] < projection[1]):
            raise ValueError(f"projection must be (low, high) with low < high, or None; got {projection}")
        self.dim = dim
        self.code_size = code_size
        self.projection = None if projection is None else (float(projection[0]), float(projection[1]))
        self.encoder = nn.Sequential(nn.Linear(dim, hidden), nn.LayerNorm(hidden), nn.ReLU(), nn.Linear(hidden, code_size))
        self.decoder = nn.Sequential(nn.Linear(code_size, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        he_init_(self)
        # Starts at the usual 1/sqrt(code_size) of dot-product attention; learning it lets reads become sharp.
        self.log_inverse_temperature = nn.Parameter(torch.tensor(-0.5 * math.log(code_size)))

    def memory_size(self, n_patterns: int) -> int:
        """``n_patterns * code_size``: the stored codes."""
        return n_patterns * self.code_size

    def write(self, patterns: Tensor, mask: Tensor | None = None) -> SlotState:
        """Encode every pattern into its slot.

        :param patterns: ``[batch, n, dim]``
        :param mask: ``[batch, n]`` bool, False for patterns that are not stored
        :return: state with slots ``[batch, n, code_size]``
        """
        _check_patterns(patterns, "patterns", self.dim)
        return SlotState(self.encoder(patterns), _written_mask(mask, patterns))

    def read(self, state: SlotState, queries: Tensor) -> Tensor:
        """Attend with the encoded queries and decode.

        :param state: from :meth:`write`
        :param queries: ``[batch, m, dim]``
        :return: ``[batch, m, dim]``
        """
        if not isinstance(state, SlotState) or state.slots.shape[-1] != self.code_size:
            raise ValueError(
                f"state must be a SlotState of codes [batch, n, {self.code_size}] from this network's write(), "
                f"got {type(state).__name__}"
            )
        codes, written = state
        _check_patterns(queries, "queries", self.dim, codes.shape[0])
        read_code = attend(codes, codes, written, self.encoder(queries), self.log_inverse_temperature.exp())
        output = self.decoder(read_code)  # [batch, m, dim]
        if self.projection is None:
            return output
        low, high = self.projection
        return low + (high - low) * torch.sigmoid(output)

    def meta_loss(
        self,
        patterns: Tensor,
        queries: Tensor,
        write: Literal["batch", "stream"] = "batch",
        mask: Tensor | None = None,
        targets: Tensor | None = None,
    ) -> Tensor:
        """Training loss with the meaning of :meth:`ebmm_rl.memory.EBMM.meta_loss` for a single read iterate: write
        ``patterns`` into fresh memories, read ``queries`` and return the mean squared reconstruction error
        ``mean_i ||target_i - read(query_i)||^2``.

        :param patterns: ``[batch, n, dim]`` stored patterns
        :param queries: ``[batch, m, dim]`` distorted queries
        :param write: "batch" or "stream": the same here, as slots do not depend on the order of writing (accepted
            so that one training loop drives EBMM and this network)
        :param mask: ``[batch, n]`` bool, patterns that are not written (and whose queries are not scored when
            ``m == n``)
        :param targets: ``[batch, m, dim]`` what each query should retrieve; defaults to ``patterns`` (``m == n``)
        :return: scalar loss
        """
        if write not in WRITE_KINDS:
            raise ValueError(f"write must be one of {WRITE_KINDS}, got {write!r}")
        targets = resolve_targets(patterns, queries, targets)
        retrieved = self.read(self.write(patterns, mask), queries)  # [batch, m, dim]
        return reconstruction_error(retrieved, targets, mask if queries.shape[1] == patterns.shape[1] else None)
