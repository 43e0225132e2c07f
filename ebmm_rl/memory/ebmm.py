"""The Energy-Based Memory Model: batch and streaming write by gradient descent on fast weights, read by gradient
descent on the input, and the meta-learning loss through both.

Bartunov et al., "Meta-Learning Deep Energy-Based Memory Models", ICLR 2020. The streaming write (one pattern per
step) is this project's relaxation of the paper's batch-writing limitation.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ebmm_rl.memory.energy import EnergyNet, IndexedPatterns, Patterns, as_dense

GradMode = Literal["second_order", "first_order", "none"]
GRAD_MODES: tuple[str, ...] = ("second_order", "first_order", "none")
WRITE_KINDS: tuple[str, ...] = ("batch", "stream")

# Columns of the per-layer step-size tables: one step size per term of the writing loss.
ENERGY_TERM, GRADIENT_TERM, PRIOR_TERM = 0, 1, 2


class MemoryState(NamedTuple):
    """The contents of a batch of memories.

    :param weights: flat fast weights ``[batch, memory_size]``, one memory per row
    :param layout: :attr:`EBMM.layout` of the memory that made them: a memory refuses a state of another layout, whose
        weights mean something else even where their size is the same
    """

    weights: Tensor
    layout: str


def inverse_softplus(value: float) -> float:
    """The raw parameter whose softplus is ``value`` (> 0)."""
    if value <= 0:
        raise ValueError(f"a softplus-positive initial value must be > 0, got {value}")
    return value + math.log(-math.expm1(-value))


class EBMM(nn.Module):
    """Energy-based associative memory with meta-learned writing and reading.

    Writing (batch): theta^0 = theta_bar, theta^{t+1} = theta^t - eta^t * mean_i grad_theta W(x_i, theta^t), with
    W(x, theta) = E(x; theta) + alpha ||grad_x E(x; theta)||^2 + beta ||theta - theta_bar||^2 and one learned
    step size per write step, per fast layer and per term of W. Writing (streaming): the same rule on one new pattern
    at a time, from the current weights, with its own learned step sizes. Reading: ``read_steps`` of projected
    gradient descent on the input with Nesterov momentum and non-increasing step sizes gamma^k = gamma^{k-1} *
    sigmoid(l^k). All of theta_bar, the energy's slow weights, step sizes, alpha, beta and momentum are meta-learned
    by :meth:`meta_loss`.

    Where the paper is silent: step sizes are learned per write step as well (the paper writes eta^t); the read
    momentum is learned (sigmoid); step sizes start larger than the paper's 1e-4 so that a short meta-training
    moves them (``write_lr_init`` etc.); the momentum velocity after a projection is the projected displacement.

    :param energy: the energy network, holding the slow weights and the layout of the fast weights
    :param write_steps: gradient steps of a batch write
    :param read_steps: gradient steps of a read
    :param stream_steps: gradient steps per pattern of a streaming write
    :param projection: ``(low, high)`` box that reads are clipped to (``(0, 1)`` for images, ``(-1, 1)`` for
        +-1 strings), or None for unbounded patterns such as embeddings
    :param grad_mode: how gradients flow through the inner loops: "second_order" (the paper); "first_order" (the
        write's inner gradients are constants, as in first-order MAML, which removes the third derivatives of the
        energy; the read is still differentiated through grad_x E, the only path from the energy to the loss); or
        "none" (no graph; acting). Under ``torch.no_grad`` it is "none".
    :param write_lr_init: initial step size of every fast layer and term of the batch write
    :param stream_lr_init: initial step size of every fast layer and term of the streaming write
    :param read_lr_init: initial first read step size gamma^0
    :param alpha_init: initial weight of the gradient-norm term of the writing loss
    :param beta_init: initial weight of the prior term ||theta - theta_bar||^2 of the writing loss
    :param momentum_init: initial Nesterov momentum of the read
    :param write_count_floor: a batch write averages its data terms over ``max(n, write_count_floor)`` patterns
        instead of ``n``: with fewer patterns than that, each keeps the weight ``1 / write_count_floor``. Set it to the
        N a memory is meta-trained at, so that it stores fewer patterns with the step sizes it learned for one pattern
        in N (with the plain mean, 1, each of 16 patterns gets 4 times the step it was trained with at 64 and the write
        overshoots). It changes nothing at N and above; streaming writes are unaffected.
    :param gradient_penalty: include the alpha ||grad_x E||^2 term of the writing loss (the paper). False drops it: a
        write step then needs no second derivatives of the energy and costs about half as much, which matters to
        agents that write at every environment step; alpha is then unused.
    """

    def __init__(
        self,
        energy: EnergyNet,
        write_steps: int = 5,
        read_steps: int = 5,
        stream_steps: int = 1,
        projection: tuple[float, float] | None = None,
        grad_mode: GradMode = "second_order",
        write_lr_init: float = 1.0,
        stream_lr_init: float = 1.0,
        read_lr_init: float = 1.0,
        alpha_init: float = 1e-2,
        beta_init: float = 1e-2,
        momentum_init: float = 0.5,
        gradient_penalty: bool = True,
        write_count_floor: int = 1,
    ) -> None:
        super().__init__()
        if not isinstance(energy, EnergyNet):
            raise TypeError(f"energy must be an EnergyNet (e.g. MLPEnergy), got {type(energy).__name__}")
        for name, steps in (("write_steps", write_steps), ("read_steps", read_steps), ("stream_steps", stream_steps)):
            if steps < 1:
                raise ValueError(f"{name} must be >= 1, got {steps}")
        if projection is not None and not (len(projection) == 2 and projection[0] < projection[1]):
            raise ValueError(f"projection must be (low, high) with low < high, or None; got {projection}")
        self._check_grad_mode(grad_mode)
        if write_count_floor < 1:
            raise ValueError(f"write_count_floor must be >= 1 (1: the plain mean over the patterns), got {write_count_floor}")
        if not 0 < momentum_init < 1:
            raise ValueError(f"momentum_init must be in (0, 1), got {momentum_init}")
        self.energy = energy
        self.write_steps = write_steps
        self.read_steps = read_steps
        self.stream_steps = stream_steps
        self.projection = None if projection is None else (float(projection[0]), float(projection[1]))
        self.grad_mode = grad_mode
        self.gradient_penalty = gradient_penalty
        self.write_count_floor = write_count_floor
        self.layout = energy.layout

        n_layers = len(energy.fast_layers)
        self.theta_bar = nn.Parameter(energy.initial_fast_weights())  # [memory_size]
        self.write_lr_raw = nn.Parameter(torch.full((write_steps, n_layers, 3), inverse_softplus(write_lr_init)))
        self.stream_lr_raw = nn.Parameter(torch.full((stream_steps, n_layers, 3), inverse_softplus(stream_lr_init)))
        self.alpha_raw = nn.Parameter(torch.tensor(inverse_softplus(alpha_init)))
        self.beta_raw = nn.Parameter(torch.tensor(inverse_softplus(beta_init)))
        self.read_lr_raw = nn.Parameter(torch.tensor(inverse_softplus(read_lr_init)))
        # sigmoid(4) ~ 0.98: the read starts with nearly constant step sizes and learns how fast to decay them.
        self.read_decay_logits = nn.Parameter(torch.full((read_steps - 1,), 4.0))
        self.momentum_logit = nn.Parameter(torch.tensor(math.log(momentum_init / (1 - momentum_init))))
        layer_sizes = torch.tensor([layer.size for layer in energy.fast_layers])
        self.register_buffer("layer_index", torch.repeat_interleave(torch.arange(n_layers), layer_sizes), persistent=False)

    # ------------------------------------------------------------------ properties
    @property
    def memory_size(self) -> int:
        """Number of float32 values in one memory's fast weights."""
        return self.energy.memory_size

    @property
    def dim(self) -> int:
        """Size of one pattern."""
        return self.energy.dim

    @property
    def alpha(self) -> Tensor:
        return F.softplus(self.alpha_raw)

    @property
    def beta(self) -> Tensor:
        return F.softplus(self.beta_raw)

    @property
    def momentum(self) -> Tensor:
        return torch.sigmoid(self.momentum_logit)

    @property
    def write_lr(self) -> Tensor:
        """Batch-write step sizes ``[write_steps, fast_layers, 3]`` (terms: energy, gradient norm, prior)."""
        return F.softplus(self.write_lr_raw)

    @property
    def stream_lr(self) -> Tensor:
        """Streaming-write step sizes ``[stream_steps, fast_layers, 3]``."""
        return F.softplus(self.stream_lr_raw)

    @property
    def read_lr(self) -> Tensor:
        """Read step sizes ``[read_steps]``, non-increasing by construction."""
        first = F.softplus(self.read_lr_raw)[None]
        decay = torch.sigmoid(self.read_decay_logits)
        return first * torch.cat([first.new_ones(1), torch.cumprod(decay, dim=0)])

    def parameter_summary(self) -> dict[str, float]:
        """The meta-learned scalars worth watching while training: mean write step sizes, the first read step size,
        alpha (only with ``gradient_penalty``: otherwise it is unused), beta and the read momentum."""
        summary = {
            "write_step_size": self.write_lr.mean().item(),
            "stream_step_size": self.stream_lr.mean().item(),
            "read_step_size": self.read_lr[0].item(),
            "alpha": self.alpha.item(),
            "beta": self.beta.item(),
            "momentum": self.momentum.item(),
        }
        if not self.gradient_penalty:
            del summary["alpha"]
        return summary

    def fit_steps(self, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        """A state dict of an EBMM with other numbers of write, stream or read steps, made to fit this one: a step
        this model has beyond the source's repeats the source's last step size (write and stream) or its last decay
        (read, so the step sizes stay non-increasing); steps beyond this model's are dropped. Everything else is
        returned as is, for ``load_state_dict`` to check. Use it to go on training a memory with more steps.

        :param state_dict: ``EBMM.state_dict()`` of the source
        :return: a new dict; the source's tensors are not modified
        """
        fitted = dict(state_dict)
        for name, steps in (
            ("write_lr_raw", self.write_steps),
            ("stream_lr_raw", self.stream_steps),
            ("read_decay_logits", self.read_steps - 1),
        ):
            source = state_dict.get(name)
            if source is None or source.shape[0] == steps:
                continue
            if source.shape[0] == 0:  # a one-step read has no decay to repeat: start at the default, as __init__ does
                fitted[name] = getattr(self, name).detach().clone()
                continue
            extra = max(steps - source.shape[0], 0)
            fitted[name] = torch.cat([source[:steps], source[-1:].expand(extra, *source.shape[1:])]).clone()
        return fitted

    # ------------------------------------------------------------------ public API
    def init_state(self, batch_size: int) -> MemoryState:
        """Empty memories: every row starts at the learned theta_bar.

        :return: state with weights ``[batch_size, memory_size]``
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        return MemoryState(self.theta_bar.expand(batch_size, -1), self.layout)

    def as_state(self, weights: Tensor) -> MemoryState:
        """Fast weights of this memory kept elsewhere (e.g. in a recurrent policy's hidden state) as its state.

        :param weights: ``[batch, memory_size]``
        :return: the state, checked when it is read or written
        """
        return MemoryState(weights, self.layout)

    def energy_of(self, state: MemoryState, x: Tensor) -> Tensor:
        """Energy of patterns under their memory.

        :param x: ``[batch, patterns, dim]``
        :return: ``[batch, patterns]``
        """
        self._check_state(state)
        self._check_patterns(x, "x", state.weights.shape[0])
        return self.energy(x, state.weights)

    def write(
        self, state: MemoryState, patterns: Patterns, mask: Tensor | None = None, grad_mode: GradMode | None = None
    ) -> MemoryState:
        """Batch write: ``write_steps`` gradient steps on the mean writing loss of all (unmasked) patterns.

        :param patterns: ``[batch, n, dim]``, or :class:`IndexedPatterns` of that shape (the same write, cheaper when
            many slots hold the same pattern)
        :param mask: ``[batch, n]`` bool: True for the patterns to write, False for those to skip; a memory with no
            pattern to write is returned unchanged
        :return: the written state
        """
        self._check_state(state)
        batch = state.weights.shape[0]
        self._check_patterns(patterns, "patterns", batch, indexed=True)
        shape = _slots(patterns)
        pattern_weights = self._pattern_weights(mask, shape, state.weights, self.write_count_floor)  # [batch, n]
        mode = self._effective_mode(grad_mode)
        from_theta_bar = self._is_theta_bar(state.weights)
        weights = state.weights
        lrs = self.write_lr
        for step in range(self.write_steps):
            at_theta_bar = from_theta_bar and step == 0
            weights = self._write_update(weights, patterns, pattern_weights, lrs[step], mode, at_theta_bar)
        if mask is not None and not from_theta_bar:  # from theta-bar, an empty memory's steps are exactly zero
            written = (pattern_weights.sum(dim=1) > 0)[:, None]  # [batch, 1]
            weights = torch.where(written, weights, state.weights)
        return MemoryState(self._finite_or_raise(weights, "write"), self.layout)

    def write_step(
        self, state: MemoryState, pattern: Tensor, valid: Tensor | None = None, grad_mode: GradMode | None = None
    ) -> MemoryState:
        """Streaming write of one new pattern per memory, from the memory's current weights.

        :param pattern: ``[batch, dim]``
        :param valid: ``[batch]`` bool, False for memories that receive no pattern this step (left unchanged)
        :return: the written state
        """
        self._check_state(state)
        batch = state.weights.shape[0]
        if not isinstance(pattern, Tensor) or pattern.dim() != 2:
            raise ValueError(
                f"pattern must be a tensor [batch, dim] = [{batch}, {self.dim}] (one pattern per memory), got "
                f"{_describe(pattern)}; use write() for [batch, n, dim]"
            )
        patterns = pattern[:, None, :]  # [batch, 1, dim]
        self._check_patterns(patterns, "pattern", batch)
        if valid is not None:
            self._check_mask(valid, (batch,), "valid", "[batch]")
        mode = self._effective_mode(grad_mode)
        pattern_weights = self._pattern_weights(None if valid is None else valid[:, None], (batch, 1), patterns)
        weights = state.weights
        lrs = self.stream_lr
        for step in range(self.stream_steps):
            weights = self._write_update(weights, patterns, pattern_weights, lrs[step], mode, at_theta_bar=False)
        if valid is not None:
            weights = torch.where(valid.to(weights.device)[:, None], weights, state.weights)
        return MemoryState(self._finite_or_raise(weights, "streaming write"), self.layout)

    def write_stream(
        self, state: MemoryState, patterns: Tensor, mask: Tensor | None = None, grad_mode: GradMode | None = None
    ) -> MemoryState:
        """Streaming write of a sequence: :meth:`write_step` for each pattern in order.

        :param patterns: ``[batch, n, dim]`` (or :class:`IndexedPatterns`), written first to last
        :param mask: ``[batch, n]`` bool: True for the patterns to write, False for those to skip
        """
        self._check_state(state)
        self._check_patterns(patterns, "patterns", state.weights.shape[0], indexed=True)
        patterns = as_dense(patterns)
        if mask is not None:
            self._check_mask(mask, patterns.shape[:2])
        for i in range(patterns.shape[1]):
            state = self.write_step(state, patterns[:, i], None if mask is None else mask[:, i], grad_mode)
        return state

    def read(
        self, state: MemoryState, queries: Tensor, return_iterates: bool = False, grad_mode: GradMode | None = None
    ) -> Tensor:
        """Retrieve by ``read_steps`` of projected gradient descent on the energy, with Nesterov momentum.

        :param queries: ``[batch, m, dim]``
        :param return_iterates: return every iterate instead of the last one
        :return: ``[batch, m, dim]``, or ``[read_steps, batch, m, dim]`` with ``return_iterates``
        """
        self._check_state(state)
        self._check_patterns(queries, "queries", state.weights.shape[0])
        track = self._effective_mode(grad_mode) != "none"
        weights = state.weights if track else state.weights.detach()
        x = queries if track else queries.detach()
        velocity = None
        momentum = self.momentum
        iterates = []
        for step, lr in enumerate(self.read_lr):
            # The first step starts at rest (zero velocity): its look-ahead point is the query itself.
            lookahead = x if step == 0 else x + momentum * velocity
            gradient = self._input_gradient(lookahead, weights, track)
            moved = self._project(lookahead - lr * gradient)
            velocity = moved - x
            x = moved
            iterates.append(x)
        if not track:
            iterates = [iterate.detach() for iterate in iterates]
        return torch.stack(iterates) if return_iterates else iterates[-1]

    def meta_loss(
        self,
        patterns: Patterns,
        queries: Tensor,
        write: Literal["batch", "stream"] = "batch",
        mask: Tensor | None = None,
        targets: Tensor | None = None,
    ) -> Tensor:
        """Meta-learning loss: write ``patterns`` into fresh memories, read ``queries``, and sum over read iterates
        the mean squared reconstruction error ``sum_k mean_i ||target_i - x_i^k||^2``.

        :param patterns: ``[batch, n, dim]`` stored patterns (or :class:`IndexedPatterns`)
        :param queries: ``[batch, m, dim]`` distorted queries
        :param write: "batch" (the paper) or "stream" (one pattern at a time, in order)
        :param mask: ``[batch, n]`` bool: True for the patterns to write (and, when ``m == n``, whose queries are
            scored), False for those to skip
        :param targets: ``[batch, m, dim]`` what each query should retrieve; defaults to ``patterns`` (``m == n``)
        :return: scalar loss
        """
        if write not in WRITE_KINDS:
            raise ValueError(f"write must be one of {WRITE_KINDS}, got {write!r}")
        self._check_patterns(patterns, "patterns", indexed=True)
        batch, n = _slots(patterns)
        self._check_patterns(queries, "queries", batch)
        targets = resolve_targets(as_dense(patterns), queries, targets)
        state = self.init_state(batch)
        if write == "batch":
            state = self.write(state, patterns, mask)
        else:
            state = self.write_stream(state, patterns, mask)
        iterates = self.read(state, queries, return_iterates=True)  # [read_steps, batch, m, dim]
        scored = mask if queries.shape[1] == n else None
        return reconstruction_error(iterates, targets, scored).sum()

    # ------------------------------------------------------------------ internals
    def _write_update(
        self, weights: Tensor, patterns: Patterns, pattern_weights: Tensor, lr: Tensor, mode: str, at_theta_bar: bool
    ) -> Tensor:
        """One gradient step of the writing loss for every memory.

        :param weights: ``[batch, memory_size]``
        :param patterns: ``[batch, n, dim]`` or :class:`IndexedPatterns`
        :param pattern_weights: ``[batch, n]``, each memory's weights of its patterns in the mean
        :param lr: ``[fast_layers, 3]`` step sizes of this step
        :param at_theta_bar: ``weights`` is theta-bar itself, where the prior term's gradient is zero
        :return: ``[batch, memory_size]``
        """
        track = mode == "second_order"
        energy_grad, gradient_grad = self._writing_gradients(weights, patterns, pattern_weights, track)
        if mode == "none":
            weights = weights.detach()
        step_sizes = lr[self.layer_index]  # [memory_size, 3]
        update = step_sizes[:, ENERGY_TERM] * energy_grad
        if not at_theta_bar:
            # alpha and beta multiply their terms' gradients here (W is linear in them), so they are meta-learned in
            # every grad mode.
            update = update + step_sizes[:, PRIOR_TERM] * 2 * self.beta * (weights - self.theta_bar)
        if gradient_grad is not None:
            update = update + step_sizes[:, GRADIENT_TERM] * self.alpha * gradient_grad
        new_weights = weights - update
        return new_weights if mode != "none" else new_weights.detach()

    def _writing_gradients(
        self, weights: Tensor, patterns: Patterns, pattern_weights: Tensor, track: bool
    ) -> tuple[Tensor, Tensor | None]:
        """Gradients w.r.t. the fast weights of the two data terms of the writing loss, sum_i w_i E(x_i) and
        sum_i w_i ||grad_x E(x_i)||^2, each ``[batch, memory_size]`` (the second None without ``gradient_penalty``).

        The energy gives the first (and grad_x E) itself (:meth:`EnergyNet.fast_gradient`, in closed form where it
        has one). With ``track`` both are differentiable w.r.t. everything they depend on; the second is taken with
        ``torch.func.grad``, because ``torch.autograd.grad`` walks the whole graph behind its output, which for a
        streaming write holds every earlier step (writing n patterns would cost O(n^2)). Without ``track`` they are
        constants, the second from ``torch.autograd.grad`` on detached copies, which have no history to walk (acting,
        also under ``torch.inference_mode``).

        :param weights: ``[batch, memory_size]``
        :param patterns: ``[batch, n, dim]`` or :class:`IndexedPatterns`
        :param pattern_weights: ``[batch, n]``
        """

        def gradient_norm_term(fast: Tensor) -> Tensor:
            input_gradient = self.energy.input_gradient(as_dense(patterns), fast)  # [batch, n, dim]
            return (input_gradient.pow(2).sum(dim=-1) * pattern_weights).sum()

        if track:
            energy_grad = self.energy.fast_gradient(patterns, weights, pattern_weights)
            if not self.gradient_penalty:
                return energy_grad, None
            return energy_grad, torch.func.grad(gradient_norm_term)(weights)
        patterns, pattern_weights = patterns.detach(), pattern_weights.detach()
        with torch.no_grad():
            energy_grad = self.energy.fast_gradient(patterns, weights.detach(), pattern_weights)
        if not self.gradient_penalty:
            return energy_grad, None
        with torch.inference_mode(False), torch.enable_grad():
            # Acting may run under torch.inference_mode, whose tensors autograd cannot record: differentiate copies.
            patterns, pattern_weights = as_dense(patterns).clone(), pattern_weights.clone()
            fast = weights.detach().clone().requires_grad_(True)
            (gradient_grad,) = torch.autograd.grad(gradient_norm_term(fast), fast)
        return energy_grad, gradient_grad

    def _input_gradient(self, x: Tensor, weights: Tensor, track: bool) -> Tensor:
        """grad_x E(x; weights) ``[batch, m, dim]``; with ``track`` differentiable w.r.t. x, weights and the energy,
        without it a constant, also under ``torch.no_grad`` (acting)."""
        if track:
            return self.energy.input_gradient(x, weights)
        with torch.no_grad():
            return self.energy.input_gradient(x.detach(), weights.detach())

    def _is_theta_bar(self, weights: Tensor) -> bool:
        """Whether every row of ``weights`` is theta-bar itself (``init_state``'s expansion of it)."""
        return weights.stride(0) == 0 and weights.data_ptr() == self.theta_bar.data_ptr()

    def _project(self, x: Tensor) -> Tensor:
        return x if self.projection is None else x.clamp(*self.projection)

    def _effective_mode(self, grad_mode: GradMode | None) -> str:
        if not torch.is_grad_enabled():
            return "none"
        mode = self.grad_mode if grad_mode is None else grad_mode
        self._check_grad_mode(mode)
        return mode

    @staticmethod
    def _check_grad_mode(mode: str) -> None:
        if mode not in GRAD_MODES:
            raise ValueError(f"grad_mode must be one of {GRAD_MODES}, got {mode!r}")

    def _pattern_weights(self, mask: Tensor | None, shape: tuple[int, int], like: Tensor, count_floor: int = 1) -> Tensor:
        """Per-memory averaging weights ``[batch, n]``: 1/max(n_valid, count_floor) for valid patterns, 0 for masked
        ones."""
        if mask is None:
            return like.new_full(tuple(shape), 1.0 / max(shape[1], count_floor))
        self._check_mask(mask, shape)
        valid = mask.to(device=like.device, dtype=like.dtype)
        return valid / valid.sum(dim=1, keepdim=True).clamp(min=count_floor)

    @staticmethod
    def _check_mask(mask: Tensor, shape: tuple[int, ...], name: str = "mask", dims: str = "[batch, n]") -> None:
        if not isinstance(mask, Tensor) or tuple(mask.shape) != tuple(shape) or mask.dtype != torch.bool:
            raise ValueError(
                f"{name} must be a bool tensor of shape {tuple(shape)} {dims}, True where a pattern is written, got "
                f"{_describe(mask)}; compare to build one, e.g. {name} = lengths > 0"
            )

    def _check_state(self, state: MemoryState) -> None:
        if not isinstance(state, MemoryState):
            raise ValueError(f"state must be a MemoryState from init_state()/write(), got {type(state).__name__}")
        if state.layout != self.layout:
            raise ValueError(
                f"the state comes from a memory of another configuration ({state.layout}, this memory: {self.layout}); "
                "create it with this memory's init_state() or as_state()"
            )
        weights = state.weights
        if weights.dim() != 2 or weights.shape[1] != self.memory_size:
            raise ValueError(
                f"state weights must be [batch, memory_size={self.memory_size}], got {tuple(weights.shape)}: "
                "the state comes from a memory with another configuration; create it with this memory's init_state()"
            )
        if weights.dtype != self.theta_bar.dtype or weights.device != self.theta_bar.device:
            raise ValueError(
                f"state is {weights.dtype} on {weights.device} but the memory is {self.theta_bar.dtype} on "
                f"{self.theta_bar.device}; move one of them with .to()"
            )
        if not _all_finite(weights):
            raise ValueError(
                "the state holds NaN or inf fast weights (write() never returns one: it was changed or loaded "
                "elsewhere), so nothing can be read from or written to it; start again from init_state()"
            )

    def _check_patterns(self, x: Patterns, name: str, batch: int | None = None, indexed: bool = False) -> None:
        """``indexed``: :class:`IndexedPatterns` are accepted too."""
        expected = f"[{'batch' if batch is None else batch}, n, {self.dim}]"
        if isinstance(x, IndexedPatterns) and indexed:
            rows, index = x
            if not (isinstance(rows, Tensor) and rows.dim() == 2 and rows.shape[-1] == self.dim and rows.shape[0] > 0):
                raise ValueError(f"{name}.rows must be a tensor [distinct, {self.dim}], got {_describe(rows)}")
            if not (isinstance(index, Tensor) and index.dim() == 2 and index.shape[1] > 0 and index.dtype == torch.long):
                raise ValueError(f"{name}.index must be a long tensor [batch, n] of rows, got {_describe(index)}")
            if index.device != rows.device:
                raise ValueError(f"{name}.index is on {index.device} but its rows are on {rows.device}; move it with .to()")
            x, n_memories = rows, index.shape[0]
        elif not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != self.dim or x.shape[1] == 0:
            raise ValueError(f"{name} must be a tensor {expected} (batch of memories, patterns, dim), got {_describe(x)}")
        else:
            n_memories = x.shape[0]
        if batch is not None and n_memories != batch:
            raise ValueError(f"{name} has {n_memories} memories but the state has {batch}; expected {expected}")
        if x.dtype != self.theta_bar.dtype:
            raise ValueError(f"{name} is {x.dtype} but the memory is {self.theta_bar.dtype}; convert with .to()")
        if x.device != self.theta_bar.device:
            raise ValueError(f"{name} is on {x.device} but the memory is on {self.theta_bar.device}; move it with .to()")
        if not _all_finite(x):
            raise ValueError(f"{name} contains NaN or inf values; clean the input before writing or reading")

    @staticmethod
    def _finite_or_raise(weights: Tensor, what: str) -> Tensor:
        if not _all_finite(weights):
            raise FloatingPointError(
                f"the {what} produced non-finite fast weights; the write step sizes or inputs are too large "
                "(lower write_lr_init/stream_lr_init, or normalise the patterns)"
            )
        return weights


def resolve_targets(patterns: Tensor, queries: Tensor, targets: Tensor | None) -> Tensor:
    """What each query should retrieve: ``targets`` if given, else the stored pattern it was made from.

    :param patterns: ``[batch, n, dim]``
    :param queries: ``[batch, m, dim]``
    :param targets: ``[batch, m, dim]`` or None (then ``m == n``)
    :return: ``[batch, m, dim]``
    """
    if targets is None:
        if queries.shape != patterns.shape:
            raise ValueError(
                f"queries {tuple(queries.shape)} must match patterns {tuple(patterns.shape)} when targets is "
                "None; pass targets [batch, m, dim] for queries that are not one per stored pattern"
            )
        return patterns
    if targets.shape != queries.shape:
        raise ValueError(f"targets {tuple(targets.shape)} must have the shape of queries {tuple(queries.shape)}")
    return targets


def reconstruction_error(retrieved: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean over scored queries of the squared error ``||target - retrieved||^2``.

    :param retrieved: ``[..., batch, m, dim]`` (e.g. every read iterate)
    :param targets: ``[batch, m, dim]``
    :param mask: ``[batch, m]`` bool, the queries to score; None scores all
    :return: ``[...]``
    """
    errors = (retrieved - targets).pow(2).sum(dim=-1)  # [..., batch, m]
    if mask is None:
        return errors.mean(dim=(-2, -1))
    scored = mask.to(errors.dtype)  # [batch, m]
    return (errors * scored).sum(dim=(-2, -1)) / scored.sum().clamp(min=1)


def _all_finite(x: Tensor) -> bool:
    """Whether ``x`` holds no NaN or inf. The sum of finite values is finite unless it overflows, so the sum answers
    with one reduction, and only an overflowing sum needs the element-wise test (this runs on every write and read)."""
    with torch.no_grad():
        return math.isfinite(x.sum()) or bool(torch.isfinite(x).all())


def _slots(patterns: Patterns) -> tuple[int, int]:
    """``(batch, n)`` of stored patterns."""
    return tuple((patterns.index if isinstance(patterns, IndexedPatterns) else patterns).shape[:2])


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    return type(value).__name__
