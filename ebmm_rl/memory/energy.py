"""Energy networks E(x; theta) whose parameters are split into fast (written) and slow (meta-learned) weights.

Bartunov et al., "Meta-Learning Deep Energy-Based Memory Models", ICLR 2020, section 3 and appendix A.

Every energy takes the fast weights of a whole batch of memories as one flat tensor ``[batch, memory_size]`` and
evaluates ``[batch, patterns, dim]`` inputs against their own memory, with batched matrix products or grouped
convolutions: there is no Python loop over memories. The flat layout is what a recurrent agent stores per step, and
what the write rule updates with per-layer step sizes.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class IndexedPatterns(NamedTuple):
    """The patterns of a batch of memories given as distinct rows and, per memory, the rows it holds: the same values
    as the dense ``rows[index]`` ``[batch, n, dim]``. Where many slots hold the same pattern (an agent's windows repeat
    the same few observations), a write from theta-bar computes what depends on a pattern alone once per row.

    :param rows: ``[distinct, dim]``
    :param index: ``[batch, n]`` (long), each slot's row
    """

    rows: Tensor
    index: Tensor

    def dense(self) -> Tensor:
        """``[batch, n, dim]``"""
        return self.rows[self.index]

    def detach(self) -> IndexedPatterns:
        return IndexedPatterns(self.rows.detach(), self.index)


Patterns = Tensor | IndexedPatterns
"""Stored patterns: a dense ``[batch, n, dim]`` tensor or :class:`IndexedPatterns`."""


def as_dense(patterns: Patterns) -> Tensor:
    """The dense ``[batch, n, dim]`` form of stored patterns."""
    return patterns.dense() if isinstance(patterns, IndexedPatterns) else patterns


@dataclass(frozen=True)
class FastLayer:
    """One writable layer: a weight of ``weight_shape`` and a bias of ``bias_size``, stored flat in that order."""

    name: str
    weight_shape: tuple[int, ...]
    bias_size: int

    @property
    def size(self) -> int:
        return math.prod(self.weight_shape) + self.bias_size

    @property
    def fan_in(self) -> int:
        return math.prod(self.weight_shape[1:])


class EnergyNet(nn.Module):
    """Base class: a scalar energy per pattern, bounded below in ``x``, with fast weights given per memory.

    Subclasses set ``dim`` (size of a flattened pattern) and ``fast_layers`` and implement :meth:`forward`.

    :param dim: number of values in one (flattened) pattern
    :param fast_layers: the writable layers, in the order they are stored in the flat fast weights
    """

    def __init__(self, dim: int, fast_layers: tuple[FastLayer, ...]) -> None:
        super().__init__()
        if dim <= 0:
            raise ValueError(f"dim must be a positive pattern size, got {dim}")
        self.dim = dim
        self.fast_layers = fast_layers

    @property
    def memory_size(self) -> int:
        """Number of float values in one memory's fast weights (the paper's memory size)."""
        return sum(layer.size for layer in self.fast_layers)

    @property
    def layout(self) -> str:
        """What the flat fast weights mean: the energy's class, pattern size and fast layers, and a digest of the shapes
        of its slow parameters. Fast weights of the same size under another layout are meaningless to this energy."""
        fast = ", ".join(
            f"{layer.name} {'x'.join(map(str, layer.weight_shape))}+{layer.bias_size}" for layer in self.fast_layers
        )
        slow_shapes = repr([(name, tuple(parameter.shape)) for name, parameter in self.named_parameters()])
        slow = hashlib.sha256(slow_shapes.encode()).hexdigest()[:8]
        return f"{type(self).__name__}(dim {self.dim}; fast {fast}; slow {slow})"

    def unpack(self, fast: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Views of flat fast weights as ``(weight [batch, *weight_shape], bias [batch, bias_size])`` per layer.

        :param fast: ``[batch, memory_size]``
        """
        batch = fast.shape[0]
        layers = []
        offset = 0
        for layer in self.fast_layers:
            n_weight = math.prod(layer.weight_shape)
            weight = fast[:, offset : offset + n_weight].reshape(batch, *layer.weight_shape)
            bias = fast[:, offset + n_weight : offset + layer.size]
            layers.append((weight, bias))
            offset += layer.size
        return layers

    def initial_fast_weights(self) -> Tensor:
        """He-initialised flat fast weights ``[memory_size]``: the starting value of the learned theta-bar."""
        chunks = []
        for layer in self.fast_layers:
            bound = math.sqrt(6.0 / layer.fan_in)
            chunks.append(torch.empty(math.prod(layer.weight_shape)).uniform_(-bound, bound))
            chunks.append(torch.zeros(layer.bias_size))
        return torch.cat(chunks)

    def forward(self, x: Tensor, fast: Tensor) -> Tensor:
        """Energy of each pattern under its own memory.

        :param x: ``[batch, patterns, dim]``
        :param fast: ``[batch, memory_size]``
        :return: ``[batch, patterns]``
        """
        raise NotImplementedError

    def input_gradient(self, x: Tensor, fast: Tensor) -> Tensor:
        """grad_x E(x; fast) of each pattern, differentiable w.r.t. ``x``, ``fast`` and the slow weights.

        This default differentiates :meth:`forward` with ``torch.func.grad``; subclasses may override it with a closed
        form (same values, fewer autograd calls: the read and write of a small memory are overhead-bound).

        :param x: ``[batch, patterns, dim]``
        :param fast: ``[batch, memory_size]``
        :return: ``[batch, patterns, dim]``
        """
        return torch.func.grad(lambda point: self(point, fast).sum())(x)

    def fast_gradient(self, x: Patterns, fast: Tensor, pattern_weights: Tensor) -> Tensor:
        """grad_fast sum_i w_i E(x_i; fast) per memory, differentiable like :meth:`input_gradient` (same default).

        :param x: ``[batch, patterns, dim]``, or :class:`IndexedPatterns` of that shape
        :param fast: ``[batch, memory_size]``
        :param pattern_weights: ``[batch, patterns]`` the w_i
        :return: ``[batch, memory_size]``
        """
        x = as_dense(x)
        return torch.func.grad(lambda weights: (self(x, weights) * pattern_weights).sum())(fast)


def he_init_(module: nn.Module) -> None:
    """He (Kaiming) initialisation of every Linear/Conv weight, zero biases, as in the paper."""
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


class LayerNorm(nn.Module):
    """Layer normalisation written with elementary ops.

    The meta-gradient of the writing loss's gradient-norm term needs third derivatives of the energy, and
    ``torch.nn.LayerNorm``'s fused double-backward is not itself differentiated correctly (``gradgradcheck`` of its
    input gradient fails in torch 2.13); elementary ops are exact at every order.

    :param features: size of the normalised last dimension
    :param eps: added to the variance
    """

    def __init__(self, features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(features))
        self.bias = nn.Parameter(torch.zeros(features))

    def forward(self, x: Tensor) -> Tensor:
        """:param x: ``[..., features]`` :return: ``[..., features]``"""
        centred = x - x.mean(dim=-1, keepdim=True)
        normalised = centred * torch.rsqrt(centred.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return normalised * self.weight + self.bias


class GatedHops(nn.Module):
    """Recurrent gated "hops" over a fixed input, ending in a linear head on a tanh state (so E is bounded below).

    The paper finds 3-5 hops help: reading follows grad_x E, and the hops give that gradient more paths.

    :param in_features: size of the input ``z``
    :param hop_dim: size of the recurrent state
    :param hops: number of recurrent steps
    """

    def __init__(self, in_features: int, hop_dim: int, hops: int) -> None:
        super().__init__()
        if hops < 1:
            raise ValueError(f"hops must be >= 1, got {hops}")
        self.hops = hops
        self.hop_dim = hop_dim
        self.candidate = nn.Linear(in_features + hop_dim, hop_dim)
        self.gate = nn.Linear(in_features + hop_dim, hop_dim)
        # No bias: a constant offset of the energy changes neither its gradients nor any read or write.
        self.head = nn.Linear(hop_dim, 1, bias=False)

    def forward(self, z: Tensor) -> Tensor:
        """:param z: ``[..., in_features]`` :return: energy ``[...]``"""
        return self.head(self._states(z, self._joint_weight())[-1][0]).squeeze(-1)

    def input_gradient(self, z: Tensor) -> Tensor:
        """d energy / d z in closed form (backpropagation through the hops written out).

        :param z: ``[..., in_features]``
        :return: ``[..., in_features]``
        """
        in_features = z.shape[-1]
        joint_weight = self._joint_weight()  # [2 * hop_dim, in_features + hop_dim]
        steps = self._states(z, joint_weight)
        state_grad = self.head.weight[0].expand(*z.shape[:-1], self.hop_dim)  # d energy / d state, [..., hop_dim]
        z_grad = None
        for hop in reversed(range(self.hops)):
            _, gate, candidate = steps[hop]
            # The first hop starts from the zero state: nothing flows to it, and its input is z alone.
            gate_pre = state_grad * (candidate if hop == 0 else candidate - steps[hop - 1][0]) * gate * (1 - gate)
            candidate_pre = state_grad * gate * (1 - candidate.pow(2))
            pre_grad = torch.cat([gate_pre, candidate_pre], dim=-1)  # [..., 2 * hop_dim]
            if hop == 0:
                z_part = pre_grad @ joint_weight[:, :in_features]
            else:
                joint_grad = pre_grad @ joint_weight  # [..., in_features + hop_dim]
                z_part = joint_grad[..., :in_features]
                state_grad = state_grad * (1 - gate) + joint_grad[..., in_features:]
            z_grad = z_part if z_grad is None else z_grad + z_part
        return z_grad

    def _joint_weight(self) -> Tensor:
        """The gate's and the candidate's weights stacked, ``[2 * hop_dim, in_features + hop_dim]``: one matrix
        product per hop computes both."""
        return torch.cat([self.gate.weight, self.candidate.weight])

    def _states(self, z: Tensor, joint_weight: Tensor) -> list[tuple[Tensor, Tensor, Tensor]]:
        """(state, gate, candidate) after each hop; the hops start from the zero state.

        :param joint_weight: :meth:`_joint_weight`
        """
        in_features = z.shape[-1]
        joint_bias = torch.cat([self.gate.bias, self.candidate.bias])  # [2 * hop_dim]

        def gate_and_candidate(pre: Tensor) -> tuple[Tensor, Tensor]:
            return torch.sigmoid(pre[..., : self.hop_dim]), torch.tanh(pre[..., self.hop_dim :])

        # The first hop, from the zero state: the state's half of the product is zero.
        gate, candidate = gate_and_candidate(F.linear(z, joint_weight[:, :in_features], joint_bias))
        state = gate * candidate  # [..., hop_dim]
        steps = [(state, gate, candidate)]
        for _ in range(1, self.hops):
            pre = F.linear(torch.cat([z, state], dim=-1), joint_weight, joint_bias)  # [..., 2 * hop_dim]
            gate, candidate = gate_and_candidate(pre)
            state = (1 - gate) * state + gate * candidate
            steps.append((state, gate, candidate))
        return steps


class MLPEnergy(EnergyNet):
    """Energy for flat vectors: slow encoder, a writable ``Linear(hidden -> fast_units)`` beside a static one, then
    gated hops and a linear head (the paper's fully connected architecture, with a one-layer encoder).

    Memory size = ``fast_units * (hidden + 1)``.

    :param dim: pattern size
    :param hidden: encoder width (input of the fast layer)
    :param fast_units: output units of the fast layer; sets the memory size
    :param hops: number of gated hops
    :param hop_dim: width of the hops and of the static layer
    """

    def __init__(self, dim: int, hidden: int = 256, fast_units: int = 32, hops: int = 3, hop_dim: int = 256) -> None:
        if hidden <= 0 or fast_units <= 0 or hop_dim <= 0:
            raise ValueError(f"hidden, fast_units and hop_dim must be positive, got {hidden}, {fast_units}, {hop_dim}")
        super().__init__(dim, (FastLayer("fast", (fast_units, hidden), fast_units),))
        self.hidden = hidden
        self.fast_units = fast_units
        self.encoder = nn.Sequential(nn.Linear(dim, hidden), LayerNorm(hidden), nn.Tanh())
        self.static = nn.Linear(hidden, hop_dim)
        self.hops = GatedHops(fast_units + hop_dim, hop_dim, hops)
        he_init_(self)

    def forward(self, x: Tensor, fast: Tensor) -> Tensor:
        ((weight, bias),) = self.unpack(fast)  # [batch, fast_units, hidden], [batch, fast_units]
        h = self.encoder(x)  # [batch, patterns, hidden]
        return self.hops(self._hop_input(h, weight, bias))

    def input_gradient(self, x: Tensor, fast: Tensor) -> Tensor:
        ((weight, bias),) = self.unpack(fast)
        linear, norm, _ = self.encoder
        pre_norm = linear(x)  # [batch, patterns, hidden]
        centred = pre_norm - pre_norm.mean(dim=-1, keepdim=True)
        inverse_std = torch.rsqrt(centred.pow(2).mean(dim=-1, keepdim=True) + norm.eps)  # [batch, patterns, 1]
        normalised = centred * inverse_std
        h = torch.tanh(normalised * norm.weight + norm.bias)  # [batch, patterns, hidden]
        fast_out_grad, static_grad = self._hop_input_grads(h, weight, bias)
        h_grad = torch.baddbmm(static_grad @ self.static.weight, fast_out_grad, weight)  # [batch, patterns, hidden]
        normalised_grad = h_grad * (1 - h.pow(2)) * norm.weight  # [batch, patterns, hidden]
        pre_norm_grad = inverse_std * (
            normalised_grad
            - normalised_grad.mean(dim=-1, keepdim=True)
            - normalised * (normalised_grad * normalised).mean(dim=-1, keepdim=True)
        )
        return pre_norm_grad @ linear.weight  # [batch, patterns, dim]

    def fast_gradient(self, x: Patterns, fast: Tensor, pattern_weights: Tensor) -> Tensor:
        ((weight, bias),) = self.unpack(fast)
        # Memories written from theta-bar share one row of it (init_state expands it): one matrix product for all, and
        # with IndexedPatterns everything before the per-memory sum is computed once per distinct row. The output is
        # per memory in either case; only this function's own products change.
        shared = fast.shape[0] == 1 or fast.stride(0) == 0
        if shared and isinstance(x, IndexedPatterns):
            rows_h = self.encoder(x.rows)  # [distinct, hidden]
            rows_grad, _ = self._hop_input_grads(rows_h, weight, bias, shared)  # [distinct, fast_units]
            h, fast_out_grad = rows_h[x.index], rows_grad[x.index]  # [batch, patterns, hidden], [.., fast_units]
        else:
            h = self.encoder(as_dense(x))  # [batch, patterns, hidden]
            fast_out_grad, _ = self._hop_input_grads(h, weight, bias, shared)
        weighted = fast_out_grad * pattern_weights[..., None]  # [batch, patterns, fast_units]
        weight_grad = torch.bmm(weighted.transpose(1, 2), h)  # [batch, fast_units, hidden]
        return torch.cat([weight_grad.flatten(1), weighted.sum(dim=1)], dim=1)  # the flat layout of unpack()

    def _hop_input(self, h: Tensor, weight: Tensor, bias: Tensor, shared: bool = False) -> Tensor:
        """z = tanh([fast layer(h), static layer(h)]) ``[batch, patterns, fast_units + hop_dim]``; ``shared``: every
        memory's fast weights are the first one's (one matrix product serves them all, and ``h`` may be any
        ``[..., hidden]``)."""
        if shared:
            fast_out = F.linear(h, weight[0], bias[0])  # [batch, patterns, fast_units]
        else:
            fast_out = torch.baddbmm(bias[:, None, :], h, weight.transpose(1, 2))
        return torch.tanh(torch.cat([fast_out, self.static(h)], dim=-1))

    def _hop_input_grads(self, h: Tensor, weight: Tensor, bias: Tensor, shared: bool = False) -> tuple[Tensor, Tensor]:
        """d energy / d (fast layer output) ``[batch, patterns, fast_units]`` and d energy / d (static layer output)
        ``[batch, patterns, hop_dim]``."""
        z = self._hop_input(h, weight, bias, shared)
        pre_tanh_grad = self.hops.input_gradient(z) * (1 - z.pow(2))
        return pre_tanh_grad[..., : self.fast_units], pre_tanh_grad[..., self.fast_units :]


class ConvEnergy(EnergyNet):
    """Energy for images: a conv stem, bottleneck residual blocks whose 3x3 convolution has ``fast_channels`` writable
    output channels beside slow ones, then gated hops and a linear head (the paper's convolutional architecture).

    Patterns are flattened images ``[batch, patterns, channels * height * width]``.
    Memory size = ``blocks * fast_channels * (bottleneck * 9 + 1)`` (the paper's ``1154 * ds`` for 2 blocks of 64).

    :param image_shape: ``(channels, height, width)``
    :param fast_channels: writable output channels of each block's 3x3 convolution; sets the memory size
    :param width: channels between blocks
    :param bottleneck: input channels of the 3x3 convolutions
    :param static_channels: slow output channels of each 3x3 convolution
    :param blocks: number of bottleneck blocks, each followed by 2x average pooling while the image allows it
    :param hops: number of gated hops
    :param hop_dim: width of the hops
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        fast_channels: int = 4,
        width: int = 32,
        bottleneck: int = 64,
        static_channels: int = 32,
        blocks: int = 2,
        hops: int = 3,
        hop_dim: int = 256,
    ) -> None:
        if len(image_shape) != 3 or min(image_shape) <= 0:
            raise ValueError(f"image_shape must be (channels, height, width), got {image_shape}")
        if fast_channels <= 0 or blocks <= 0:
            raise ValueError(f"fast_channels and blocks must be positive, got {fast_channels}, {blocks}")
        layers = tuple(FastLayer(f"block{i}", (fast_channels, bottleneck, 3, 3), fast_channels) for i in range(blocks))
        super().__init__(math.prod(image_shape), layers)
        self.image_shape = tuple(image_shape)
        self.fast_channels = fast_channels
        channels, height, width_px = image_shape
        self.stem = nn.Conv2d(channels, width, 3, padding=1)
        self.reduce = nn.ModuleList(nn.Conv2d(width, bottleneck, 1) for _ in range(blocks))
        self.static = nn.ModuleList(nn.Conv2d(bottleneck, static_channels, 3, padding=1) for _ in range(blocks))
        self.expand = nn.ModuleList(nn.Conv2d(fast_channels + static_channels, width, 1) for _ in range(blocks))
        self.pool_after = []
        for _ in range(blocks):
            pool = height >= 8 and width_px >= 8
            self.pool_after.append(pool)
            if pool:
                height, width_px = height // 2, width_px // 2
        self.project = nn.Linear(width * height * width_px, hop_dim)
        self.hops = GatedHops(hop_dim, hop_dim, hops)
        he_init_(self)

    def forward(self, x: Tensor, fast: Tensor) -> Tensor:
        batch, patterns, _ = x.shape
        images = x.reshape(batch * patterns, *self.image_shape)  # [batch * patterns, C, H, W]
        h = F.silu(self.stem(images))  # [batch * patterns, width, H, W]
        for block, (weight, bias) in enumerate(self.unpack(fast)):
            reduced = F.silu(self.reduce[block](h))  # [batch * patterns, bottleneck, H, W]
            fast_out = self._per_memory_conv(reduced, weight, bias, batch)  # [batch * patterns, fast_channels, H, W]
            mixed = F.silu(torch.cat([fast_out, self.static[block](reduced)], dim=1))
            h = h + self.expand[block](mixed)
            if self.pool_after[block]:
                h = F.avg_pool2d(h, 2)
        z = torch.tanh(self.project(h.flatten(1)))  # [batch * patterns, hop_dim]
        return self.hops(z).reshape(batch, patterns)

    @staticmethod
    def _per_memory_conv(h: Tensor, weight: Tensor, bias: Tensor, batch: int) -> Tensor:
        """3x3 convolution of each memory's patterns with that memory's weights, as one grouped convolution.

        :param h: ``[batch * patterns, in, H, W]``
        :param weight: ``[batch, out, in, 3, 3]``
        :param bias: ``[batch, out]``
        :return: ``[batch * patterns, out, H, W]``
        """
        _, channels_in, height, width = h.shape
        channels_out = weight.shape[1]
        grouped = h.reshape(batch, -1, channels_in, height, width).transpose(0, 1)  # [patterns, batch, in, H, W]
        grouped = grouped.reshape(-1, batch * channels_in, height, width)  # [patterns, batch * in, H, W]
        out = F.conv2d(
            grouped, weight.reshape(batch * channels_out, channels_in, 3, 3), bias.reshape(-1), padding=1, groups=batch
        )  # [patterns, batch * out, H, W]
        out = out.reshape(-1, batch, channels_out, height, width).transpose(0, 1)  # [batch, patterns, out, H, W]
        return out.reshape(-1, channels_out, height, width)
