"""EBMM as an episodic memory inside any SB3 policy: :class:`EBMMExtractor`, and the encoders that make patterns.

Bartunov et al., "Meta-Learning Deep Energy-Based Memory Models", ICLR 2020, used as the memory of an agent.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import is_image_space, preprocess_obs
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, CombinedExtractor, FlattenExtractor, NatureCNN
from torch import Tensor, nn

from ebmm_rl.memory import IndexedPatterns, add_noise
from ebmm_rl.memory.ebmm import WRITE_KINDS
from ebmm_rl.sb3.memory_spec import build_memory
from ebmm_rl.sb3.window import MASK_KEY, OBSERVATION_KEY, WINDOW_PREFIX, WRAP_HINT, current_spaces


class SymbolicEncoder(nn.Module):
    """Encodes a MiniGrid symbolic view and heading into ``[-1, 1]^out_dim``.

    Each cell's (object, colour, state) indices are embedded and summed; the flattened cells and the one-hot heading
    go through a two-layer MLP ending in tanh.

    :param image_shape: ``(height, width, 3)`` of the view
    :param index_high: largest object, colour and state index
    :param out_dim: size of the output
    :param embedding_dim: size of a cell's embedding
    :param hidden: width of the MLP
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        index_high: tuple[int, int, int],
        out_dim: int,
        embedding_dim: int,
        hidden: int,
    ) -> None:
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(high + 1, embedding_dim) for high in index_high)
        self.register_buffer("index_high", torch.tensor(index_high), persistent=False)
        # Where each channel's table starts in the three tables stacked (see forward).
        offsets = torch.tensor([0, index_high[0] + 1, index_high[0] + index_high[1] + 2])
        self.register_buffer("index_offsets", offsets, persistent=False)
        self.table_size = sum(index_high) + 3
        height, width, _ = image_shape
        self.mlp = nn.Sequential(
            nn.Linear(height * width * embedding_dim + 4, hidden),
            nn.ReLU(),
            nn.Linear(hidden, out_dim),
            nn.Tanh(),
        )

    def forward(self, image: Tensor, direction: Tensor) -> Tensor:
        """:param image: ``[..., H, W, 3]`` symbolic indices (as floats, SB3's preprocessing)
        :param direction: ``[...]`` heading in 0..3
        :return: ``[..., out_dim]``"""
        indices = torch.minimum(image.long().clamp(min=0), self.index_high) + self.index_offsets  # [..., H, W, 3]
        # The sum of a cell's three embeddings as one product: its multi-hot row times the stacked tables. Same values
        # as three lookups, and the backward is a matrix product instead of three slow scatter-adds.
        table = torch.cat([embedding.weight for embedding in self.embeddings])  # [table_size, embedding_dim]
        multi_hot = table.new_zeros(*indices.shape[:-1], self.table_size).scatter_(-1, indices, 1.0)
        cells = multi_hot @ table  # [..., H, W, embedding_dim]
        heading = nn.functional.one_hot(direction.long().clamp(0, 3), 4).to(cells.dtype)
        return self.mlp(torch.cat([cells.flatten(-3), heading], dim=-1))


def distinct_rows(*blocks: Tensor) -> tuple[Tensor, Tensor]:
    """The distinct rows of a matrix, found exactly (equal values); the matrix may be given as column blocks.

    Rows are grouped by a hash, their dot product with fixed weights (one matrix-vector product per block and a sort of
    N numbers), and the grouping is then checked against the rows themselves: only if two different rows share a hash
    does it fall back to ``torch.unique(dim=0)``, whose lexicographic sort of whole rows costs some 5x more on a CPU.
    Equal rows that round to different hashes stay apart, which costs only some of the saving.

    :param blocks: ``[N, D_k]`` each: the matrix's columns, block by block (its rows are never built: for an agent's
        observation windows that copy would cost as much as the hash)
    :return: ``first`` ``[distinct]``, the position of each distinct row's first occurrence, and ``row`` ``[N]``, each
        row's distinct row (``rows[first][row]`` is ``rows``)
    """
    n = blocks[0].shape[0]
    # Integers are hashed in float64, exactly up to 2^53.
    blocks = tuple(block if block.is_floating_point() else block.double() for block in blocks)
    dtype = functools.reduce(torch.promote_types, (block.dtype for block in blocks))
    weights = hash_weights(sum(block.shape[1] for block in blocks), blocks[0].new_empty(0, dtype=dtype))
    hashes = sum(
        block.to(dtype) @ block_weights
        for block, block_weights in zip(blocks, weights.split([block.shape[1] for block in blocks]), strict=True)
    )
    _, row = torch.unique(hashes, return_inverse=True)
    first = _first_occurrences(row, n)
    representative = first[row]  # [N]
    if not all(torch.equal(block.index_select(0, representative), block) for block in blocks):
        _, row = torch.unique(torch.cat(blocks, dim=1), dim=0, return_inverse=True)
        first = _first_occurrences(row, n)
    return first, row


def hash_weights(dim: int, like: Tensor) -> Tensor:
    """The fixed weights of :func:`distinct_rows`' hash, ``[dim]`` in ``[0.5, 1.5)``, spread by the golden ratio."""
    return torch.arange(dim, device=like.device, dtype=like.dtype).mul_(0.6180339887).frac_().add_(0.5)


def _first_occurrences(row: Tensor, n: int) -> Tensor:
    """:return: ``[groups]`` the first position of each group of ``row`` ``[n]`` (group ids ``0..groups - 1``)"""
    positions = torch.arange(n, device=row.device)
    return positions.new_full((int(row.max()) + 1 if n else 0,), n).scatter_reduce_(0, row, positions, "amin")


def symbolic_index_high(image_space: spaces.Box) -> tuple[int, int, int]:
    """Largest (object, colour, state) index of a MiniGrid symbolic image space ``[H, W, 3]``."""
    index_high = tuple(int(high) for high in image_space.high.reshape(-1, 3).max(axis=0))
    if max(index_high) > 255:
        raise ValueError(f"image must hold MiniGrid symbolic indices, got upper bounds {index_high}")
    return index_high


def heading_index(direction: Tensor) -> Tensor:
    """The heading 0..3 from SB3's one-hot encoding of MiniGrid's Discrete(4) ``direction``, ``[batch, 4]`` -> ``[batch]``."""
    return direction.reshape(direction.shape[0], 4).argmax(dim=-1)


class MiniGridEncoder(BaseFeaturesExtractor):
    """Features of a MiniGrid observation: :class:`SymbolicEncoder` of its symbolic view and heading, in ``[-1, 1]``.

    :param observation_space: a Dict with ``image`` (symbolic, see :class:`ebmm_rl.envs.SymbolicImage`) and ``direction``
    :param features_dim: size of the output features
    :param embedding_dim: size of a cell's embedding
    :param hidden: width of the encoder's MLP
    """

    def __init__(self, observation_space: spaces.Dict, features_dim: int = 32, embedding_dim: int = 8, hidden: int = 64):
        keys = observation_space.spaces if isinstance(observation_space, spaces.Dict) else {}
        if "image" not in keys or "direction" not in keys:
            raise ValueError(
                f"MiniGridEncoder needs a Dict observation with 'image' and 'direction', got {observation_space}; "
                "wrap a MiniGrid env with ebmm_rl.envs.make_env(env_id), or leave the encoder to SB3's choice"
            )
        super().__init__(observation_space, features_dim)
        image_space = observation_space["image"]
        self.encoder = SymbolicEncoder(
            image_space.shape, symbolic_index_high(image_space), features_dim, embedding_dim, hidden
        )

    def forward(self, observations: dict[str, Tensor]) -> Tensor:
        """:return: ``[batch, features_dim]``"""
        return self.encoder(observations["image"], heading_index(observations["direction"]))


def default_encoder_class(observation_space: spaces.Space) -> type[BaseFeaturesExtractor]:
    """The features extractor SB3 itself uses for an observation space: ``CombinedExtractor`` for a Dict (its
    ``MultiInputPolicy``), ``NatureCNN`` for an image (``CnnPolicy``), ``FlattenExtractor`` otherwise (``MlpPolicy``)."""
    if isinstance(observation_space, spaces.Dict):
        return CombinedExtractor
    if is_image_space(observation_space, check_channels=False):
        return NatureCNN
    return FlattenExtractor


def make_encoder(
    observation_space: spaces.Space,
    encoder_class: type[BaseFeaturesExtractor] | None,
    encoder_kwargs: dict[str, Any] | None,
    normalize_images: bool,
) -> BaseFeaturesExtractor:
    """A features extractor for one observation, built as an SB3 policy builds its own.

    :param encoder_class: None: :func:`default_encoder_class`
    :param encoder_kwargs: its arguments besides the space
    :param normalize_images: whether images reach it divided by 255 (SB3 then tells NatureCNN and CombinedExtractor)
    """
    encoder_class = encoder_class or default_encoder_class(observation_space)
    encoder_kwargs = dict(encoder_kwargs or {})
    if not normalize_images and issubclass(encoder_class, (NatureCNN, CombinedExtractor)):
        encoder_kwargs["normalized_image"] = True
    return encoder_class(observation_space, **encoder_kwargs)


def keeps_own_init(apply: Callable[[nn.Module, Callable[[nn.Module], None]], nn.Module]):
    """Make a module's ``apply`` skip its ``memory`` when SB3's orthogonal init (``BasePolicy.init_weights``, which
    ``ortho_init=True`` applies to the features extractor) is applied: the energy network's slow weights keep the
    initialisation the EBMM was designed with. Every other function reaches the memory as usual."""

    @functools.wraps(apply)
    def wrapper(self: nn.Module, fn: Callable[[nn.Module], None]) -> nn.Module:
        if getattr(fn, "func", fn) is not BasePolicy.init_weights:
            return apply(self, fn)
        for module in self.children():
            if module is not self.memory:
                module.apply(fn)
        fn(self)
        return self

    return wrapper


class EBMMExtractor(BaseFeaturesExtractor):
    """Features = the current observation's pattern and what an EBMM of the episode's recent observations returns.

    Works with any SB3 algorithm that takes a features extractor (PPO, A2C, DQN, SAC, ...) on any observation space
    SB3 supports, wrapped in :class:`~ebmm_rl.sb3.window.VecEpisodicWindow`. At every call the extractor encodes each
    observation of the episode's window into a pattern (the encoder, by default SB3's own for the space, then, with
    ``pattern_layer``, a linear layer and tanh to ``(-1, 1)^pattern_dim``), writes the patterns into a fresh memory per
    environment (``write="batch"`` writes them all at once, ``"stream"`` one at a time, oldest first), computes
    ``n_queries`` queries from the current observation's pattern and reads. It keeps no state between calls, as SB3
    requires: the episode's memory comes from the window. The RL loss trains encoder, queries and memory end to end
    through the read and the write; :meth:`memory_loss` is the memory's own reconstruction objective on the agent's
    observations. SB3's orthogonal init (``ortho_init``) reaches the encoder and heads but not the memory.

    :param observation_space: the observation space of an env wrapped in ``VecEpisodicWindow``
    :param features_dim: size of the output features
    :param memory: the memory (:func:`ebmm_rl.sb3.memory_spec.build_memory`: ``pattern_dim``, ``hidden``, ``fast_units``,
        ``hops``, ``hop_dim``, ``write_steps``, ``read_steps``, ``stream_steps``, ``grad_mode``, ``gradient_penalty``,
        ``beta_init``, ...); None: :data:`~ebmm_rl.sb3.memory_spec.MEMORY_DEFAULTS`
    :param write: how the window is written, one of :data:`ebmm_rl.memory.ebmm.WRITE_KINDS`: "batch" or "stream"
    :param n_queries: number of reads from the current observation
    :param memory_noise_std: std of the Gaussian noise that turns stored patterns into queries in :meth:`memory_loss`
    :param encoder_class: the features extractor class that encodes one observation (e.g.
        :class:`MiniGridEncoder`); None: SB3's choice for the space (:func:`default_encoder_class`)
    :param encoder_kwargs: its keyword arguments
    :param normalize_images: whether the policy divides images by 255 (the policy's ``normalize_images``)
    :param pattern_layer: map the encoder's features to patterns with a linear layer and tanh. False: the encoder's
        features are the patterns, for an encoder that already ends in ``(-1, 1)^pattern_dim`` (e.g.
        :class:`MiniGridEncoder` with ``features_dim`` equal to the memory's ``pattern_dim``), as the MiniGrid configs
        do: there a second tanh layer shrinks the patterns
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        features_dim: int = 64,
        memory: dict[str, Any] | None = None,
        write: str = "batch",
        n_queries: int = 1,
        memory_noise_std: float = 0.5,
        encoder_class: type[BaseFeaturesExtractor] | None = None,
        encoder_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        pattern_layer: bool = True,
    ) -> None:
        current = _check_window_space(observation_space)
        super().__init__(observation_space, features_dim)
        if write not in WRITE_KINDS:
            raise ValueError(f"write must be {' or '.join(map(repr, WRITE_KINDS))}, got {write!r}")
        if n_queries < 1:
            raise ValueError(f"n_queries must be >= 1, got {n_queries}")
        self.write = write
        self.n_queries = n_queries
        self.memory_noise_std = memory_noise_std
        self.normalize_images = normalize_images
        self.current_spaces = current
        self.is_dict = list(current) != [OBSERVATION_KEY]
        encoder_space = spaces.Dict(current) if self.is_dict else current[OBSERVATION_KEY]
        self.memory = build_memory(memory)
        self.pattern_dim = self.memory.dim
        self.encoder = make_encoder(encoder_space, encoder_class, encoder_kwargs, normalize_images)
        if pattern_layer:
            self.pattern_head = nn.Sequential(nn.Linear(self.encoder.features_dim, self.pattern_dim), nn.Tanh())
        elif self.encoder.features_dim != self.pattern_dim:
            raise ValueError(
                f"pattern_layer=False stores the encoder's features as patterns, so its features_dim "
                f"({self.encoder.features_dim}) must equal the memory's pattern_dim ({self.pattern_dim}); set "
                "encoder_kwargs.features_dim to pattern_dim, or keep pattern_layer=True"
            )
        else:
            self.pattern_head = nn.Identity()
        self.query = nn.Sequential(nn.Linear(self.pattern_dim, self.pattern_dim * n_queries), nn.Tanh())
        self.head = nn.Sequential(nn.Linear(self.pattern_dim * (1 + n_queries), features_dim), nn.ReLU())
        # SB3 preprocessed each window as the Box it is; the slots are undone to the raw observations, then
        # preprocessed as the observation's own space. An image window (4-d) is not an image to SB3, but a window of
        # 2-d uint8 frames is: those it divided by 255. VecTransposeImage turns the current image channel-first only.
        self._window_scale: dict[str, float] = {}
        self._transpose: dict[str, bool] = {}
        for key, space in current.items():
            window_space = observation_space[WINDOW_PREFIX + key]
            self._window_scale[key] = 255.0 if normalize_images and is_image_space(window_space) else 1.0
            height, width, channels = (*window_space.shape[1:], 0, 0, 0)[:3]
            self._transpose[key] = window_space.shape[1:] != space.shape and (channels, height, width) == space.shape

    @property
    def memory_size(self) -> int:
        """Floats in one environment's memory."""
        return self.memory.memory_size

    apply = keeps_own_init(nn.Module.apply)

    def raw_slots(self, observations: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor]:
        """Every slot of every window as one raw observation (the values the env returned, as floats).

        :return: per key ``[batch * window, *shape]`` (the current observation's layout) and the mask ``[batch, window]``
            (bool)
        """
        mask = observations[MASK_KEY] > 0.5
        slots = {}
        for key in self.current_spaces:
            values = observations[WINDOW_PREFIX + key].flatten(0, 1)  # [batch * window, ...]
            if self._window_scale[key] != 1.0:
                values = values * self._window_scale[key]
            slots[key] = values.permute(0, 3, 1, 2) if self._transpose[key] else values
        return slots, mask

    def encode(self, slots: dict[str, Tensor]) -> Tensor:
        """Patterns of raw observations: ``[N, ...]`` per key -> ``[N, pattern_dim]`` in ``(-1, 1)``."""
        preprocessed = {
            key: preprocess_obs(values, self.current_spaces[key], self.normalize_images) for key, values in slots.items()
        }
        encoded = self.encoder(preprocessed if self.is_dict else preprocessed[OBSERVATION_KEY])
        return self.pattern_head(encoded)

    def encode_window(self, observations: dict[str, Tensor], distinct: bool) -> tuple[IndexedPatterns, Tensor]:
        """Patterns and validity of the episode's window.

        :param distinct: encode each distinct observation of the batch's windows once. Windows overlap (a window of T
            shares T - 1 observations with the next step's) and episodes repeat views (a training minibatch of 256
            MiniGrid windows of 8 holds some 50 distinct observations), so this cuts the encoder's work, and its
            backward, to a fraction; for a few environments acting without a graph, finding them costs more than it
            saves.
        :return: patterns (``rows`` ``[distinct or batch * window, pattern_dim]``, ``index`` ``[batch, window]``) and
            mask ``[batch, window]`` (bool)
        """
        slots, mask = self.raw_slots(observations)
        batch, window = mask.shape
        if distinct:
            first, row = distinct_rows(*(values.reshape(len(values), -1) for values in slots.values()))
            slots = {key: values[first] for key, values in slots.items()}
        else:
            row = torch.arange(batch * window, device=mask.device)
        return IndexedPatterns(self.encode(slots), row.reshape(batch, window)), mask

    def write_window(self, patterns: IndexedPatterns, mask: Tensor):
        """Write each environment's window into a fresh memory.

        :param patterns: rows ``[distinct, pattern_dim]`` and index ``[batch, window]``
        :param mask: ``[batch, window]``
        """
        state = self.memory.init_state(mask.shape[0])
        if self.write == "batch":
            return self.memory.write(state, patterns, mask)
        return self.memory.write_stream(state, patterns, mask)

    def forward(self, observations: dict[str, Tensor]) -> Tensor:
        """:return: features ``[batch, features_dim]``"""
        if torch.is_grad_enabled():
            # Training builds a graph through encoder and write: that is where encoding distinct observations pays.
            return self._features(observations, distinct=True)
        # Acting: no graph, so inference mode can skip autograd's bookkeeping too (a sixth of the extractor's time at 8
        # environments). Its output is cloned into a normal tensor: DQN and SAC use no-graph features as loss targets,
        # which autograd must be able to save.
        with torch.inference_mode():
            features = self._features(observations, distinct=False)
        return features.clone()

    def _features(self, observations: dict[str, Tensor], distinct: bool) -> Tensor:
        patterns, mask = self.encode_window(observations, distinct)
        if not distinct:
            return self._window_features(patterns, mask)
        # Equal windows (same observations, same mask) give equal features, the query coming from their last slot. Once
        # a policy settles, a minibatch of 256 T-maze windows holds some 15 distinct ones.
        first, row = distinct_rows(patterns.index * 2 + mask.long())  # [distinct windows], [batch]
        features = self._window_features(IndexedPatterns(patterns.rows, patterns.index[first]), mask[first])
        return features[row]  # [batch, features_dim]

    def _window_features(self, patterns: IndexedPatterns, mask: Tensor) -> Tensor:
        """:return: ``[windows, features_dim]`` of ``patterns.index`` ``[windows, window]``"""
        current = patterns.rows[patterns.index[:, -1]]  # [windows, pattern_dim]: the last slot is the current observation
        state = self.write_window(patterns, mask)
        queries = self.query(current).reshape(-1, self.n_queries, self.pattern_dim)  # [windows, n_queries, pattern_dim]
        retrieved = self.memory.read(state, queries)  # [windows, n_queries, pattern_dim]
        return self.head(torch.cat([current, retrieved.flatten(1)], dim=-1))

    def memory_loss(self, observations: dict[str, Tensor]) -> Tensor:
        """The EBMM objective on the agent's own episodes: write each window, read noisy copies of its patterns, and
        score the reconstruction (sum over read steps of the mean squared error of valid patterns).

        Patterns are detached: this loss trains the memory to store what the encoder produces, and must not teach the
        encoder to make patterns trivially easy to store (e.g. all equal).
        """
        with torch.no_grad():
            patterns, mask = self.encode_window(observations, distinct=True)
        queries = add_noise(patterns.dense(), self.memory_noise_std)  # [batch, window, pattern_dim]
        return self.memory.meta_loss(patterns, queries, write=self.write, mask=mask)


def _check_window_space(observation_space: spaces.Space) -> dict[str, spaces.Space]:
    """The current observation's spaces of a windowed observation space.

    :raises ValueError: the space has no window, with the line that adds one
    """
    current = current_spaces(observation_space)
    keys = observation_space.spaces if isinstance(observation_space, spaces.Dict) else {}
    missing = [WINDOW_PREFIX + key for key in current if WINDOW_PREFIX + key not in keys]
    if not current or missing or MASK_KEY not in keys:
        raise ValueError(
            f"EBMMExtractor reads the episode's last observations from the observation, and {observation_space} holds "
            f"none (no {MASK_KEY!r}). Wrap the vectorised env in ebmm_rl.sb3.VecEpisodicWindow before the model sees "
            f"it:\n    {WRAP_HINT}"
        )
    return current
