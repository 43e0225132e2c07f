"""EBMM as an episodic memory inside an SB3 policy: :class:`EBMMExtractor`.

Bartunov et al., "Meta-Learning Deep Energy-Based Memory Models", ICLR 2020, used as the memory of an agent.
"""

from __future__ import annotations

import math

import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import Tensor, nn
from torch.nn import functional as F

from ebmm_rl.memory import EBMM, IndexedPatterns, MLPEnergy, add_noise

WINDOW_KEYS = ("image", "direction", "window_image", "window_direction", "window_mask")


class ObservationEncoder(nn.Module):
    """Encodes a MiniGrid symbolic view and heading into a pattern in ``[-1, 1]^pattern_dim``.

    Each cell's (object, colour, state) indices are embedded and summed; the flattened cells and the one-hot heading
    go through a two-layer MLP ending in tanh, so patterns fit the memory's ``(-1, 1)`` read projection.

    :param image_shape: ``(height, width, 3)`` of the view
    :param index_high: largest object, colour and state index
    :param pattern_dim: size of a pattern
    :param embedding_dim: size of a cell's embedding
    :param hidden: width of the MLP
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        index_high: tuple[int, int, int],
        pattern_dim: int,
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
        # distinct(): a cell's three clipped indices as one mixed-radix symbol, and the bits a symbol (or heading) needs.
        radix = [high + 1 for high in index_high]
        self.register_buffer("cell_radix", torch.tensor([1, radix[0], radix[0] * radix[1]]), persistent=False)
        self.symbol_bits = (max(math.prod(radix), 4) - 1).bit_length()
        height, width, _ = image_shape
        self.mlp = nn.Sequential(
            nn.Linear(height * width * embedding_dim + 4, hidden),
            nn.ReLU(),
            nn.Linear(hidden, pattern_dim),
            nn.Tanh(),
        )

    def forward(self, image: Tensor, direction: Tensor) -> Tensor:
        """:param image: ``[..., H, W, 3]`` symbolic indices (as floats, SB3's preprocessing)
        :param direction: ``[...]`` heading in 0..3
        :return: ``[..., pattern_dim]``"""
        indices = self.clamp_indices(image) + self.index_offsets  # [..., H, W, 3]
        # The sum of a cell's three embeddings as one product: its multi-hot row times the stacked tables. Same values
        # as three lookups, and the backward is a matrix product instead of three slow scatter-adds.
        table = torch.cat([embedding.weight for embedding in self.embeddings])  # [table_size, embedding_dim]
        multi_hot = table.new_zeros(*indices.shape[:-1], self.table_size).scatter_(-1, indices, 1.0)
        cells = multi_hot @ table  # [..., H, W, embedding_dim]
        heading = nn.functional.one_hot(direction.long().clamp(0, 3), 4).to(cells.dtype)
        return self.mlp(torch.cat([cells.flatten(-3), heading], dim=-1))

    def clamp_indices(self, image: Tensor) -> Tensor:
        """The (object, colour, state) indices the encoder reads, clipped to their tables: ``[..., H, W, 3]`` long."""
        return torch.minimum(image.long().clamp(min=0), self.index_high)

    def distinct(self, image: Tensor, direction: Tensor) -> tuple[Tensor, Tensor]:
        """The distinct observations among ``image`` and ``direction`` as the encoder sees them (same encoding, same
        row), found exactly by :func:`distinct_rows` of one symbol per cell (its three clipped indices) and the heading.

        :param image: ``[N, H, W, 3]`` symbolic indices
        :param direction: ``[N]`` heading
        :return: ``first`` ``[distinct]`` and ``row`` ``[N]`` (``image[first][row]`` is ``image``, clipped)
        """
        cell_codes = (self.clamp_indices(image) * self.cell_radix).sum(dim=-1)  # [N, H, W]
        symbols = torch.cat([cell_codes.flatten(1), direction.long().clamp(0, 3)[:, None]], dim=1)  # [N, symbols]
        return distinct_rows(symbols, self.symbol_bits)


def distinct_rows(symbols: Tensor, symbol_bits: int) -> tuple[Tensor, Tensor]:
    """The distinct rows of a matrix of small non-negative integers, found exactly.

    Symbols are packed a few at a time into integers, and ``torch.unique`` of (rank of the prefix so far, next integer)
    gives exact ranks of ever longer prefixes: no hashing, so no collision.

    :param symbols: ``[N, L]`` long, each ``< 2 ** symbol_bits``
    :param symbol_bits: bits of the largest symbol
    :return: ``first`` ``[distinct]``, the position of each distinct row's first occurrence, and ``row`` ``[N]``, each
        row's distinct row (``symbols[first][row]`` is ``symbols``)
    """
    n, length = symbols.shape
    rank_bits = max(n - 1, 1).bit_length()
    per_word = (63 - rank_bits) // symbol_bits  # a rank and a word of symbols fit a (non-negative) int64
    n_words = -(-length // per_word)
    # Zero padding to whole words: the same for every row, so the words still tell them apart.
    symbols = F.pad(symbols, (0, n_words * per_word - length)).reshape(n, n_words, per_word)
    place = torch.tensor([2 ** (symbol_bits * k) for k in range(per_word)], device=symbols.device)
    words = (symbols * place).sum(dim=-1)  # [N, n_words], each < 2^(symbol_bits * per_word)
    row = torch.zeros(n, dtype=torch.long, device=symbols.device)
    for word in words.unbind(dim=1):
        distinct_codes, row = torch.unique(row * 2 ** (symbol_bits * per_word) + word, return_inverse=True)
    positions = torch.arange(n, device=symbols.device)
    first = positions.new_full((distinct_codes.shape[0],), n).scatter_reduce_(0, row, positions, "amin")
    return first, row


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
    """Features of a MiniGrid observation: :class:`ObservationEncoder` of its symbolic view and heading, in ``[-1, 1]``.

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
                "wrap a MiniGrid env with ebmm_rl.envs.make_env(env_id)"
            )
        super().__init__(observation_space, features_dim)
        image_space = observation_space["image"]
        self.encoder = ObservationEncoder(
            image_space.shape, symbolic_index_high(image_space), features_dim, embedding_dim, hidden
        )

    def forward(self, observations: dict[str, Tensor]) -> Tensor:
        """:return: ``[batch, features_dim]``"""
        return self.encoder(observations["image"], heading_index(observations["direction"]))


class EBMMExtractor(BaseFeaturesExtractor):
    """Features = the current observation's encoding and what an EBMM of the episode's recent observations returns.

    At every call the extractor encodes the ``window`` of the current episode's observations (from
    :class:`ebmm_rl.envs.EpisodicWindow`) into patterns, writes them into a fresh memory per environment (``write="batch"``
    writes them all at once, ``"stream"`` one at a time, oldest first), computes ``n_queries`` queries from the current
    observation and reads. It keeps no state between calls, as SB3 requires: the episode's memory comes from the
    window. The policy's loss trains encoder, queries and memory end to end through the read and the write;
    :meth:`memory_loss` is the memory's own reconstruction objective on the agent's observations.

    :param observation_space: a Dict with ``image``, ``direction``, ``window_image``, ``window_direction`` and
        ``window_mask``: a MiniGrid env wrapped by ``ebmm_rl.envs.make_env(..., window=T)``
    :param features_dim: size of the output features
    :param pattern_dim: size of a stored pattern
    :param embedding_dim: size of a cell embedding of the observation encoder
    :param encoder_hidden: width of the observation encoder
    :param memory_hidden: encoder width of the energy network (input of its fast layer)
    :param fast_units: outputs of the energy's fast layer; memory size = ``fast_units * (memory_hidden + 1)``
    :param hops: gated hops of the energy
    :param hop_dim: width of the energy's hops
    :param write: "batch" or "stream"
    :param write_steps: gradient steps of a batch write
    :param read_steps: gradient steps of a read
    :param stream_steps: gradient steps per pattern of a streaming write
    :param n_queries: number of reads from the current observation
    :param grad_mode: "second_order" or "first_order" gradients through the memory while training
    :param memory_noise_std: std of the Gaussian noise that turns stored patterns into queries in :meth:`memory_loss`
    :param gradient_penalty: keep the alpha ||grad_x E||^2 term of the writing loss (see :class:`ebmm_rl.memory.EBMM`);
        False makes every write cheaper
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        features_dim: int = 64,
        pattern_dim: int = 32,
        embedding_dim: int = 8,
        encoder_hidden: int = 64,
        memory_hidden: int = 64,
        fast_units: int = 16,
        hops: int = 2,
        hop_dim: int = 64,
        write: str = "batch",
        write_steps: int = 3,
        read_steps: int = 3,
        stream_steps: int = 1,
        n_queries: int = 1,
        grad_mode: str = "second_order",
        memory_noise_std: float = 0.5,
        gradient_penalty: bool = True,
    ) -> None:
        _check_window_space(observation_space)
        super().__init__(observation_space, features_dim)
        if write not in ("batch", "stream"):
            raise ValueError(f"write must be 'batch' or 'stream', got {write!r}")
        if grad_mode not in ("second_order", "first_order"):
            raise ValueError(f"grad_mode must be 'second_order' or 'first_order', got {grad_mode!r}")
        if n_queries < 1:
            raise ValueError(f"n_queries must be >= 1, got {n_queries}")
        image_space = observation_space["image"]
        index_high = symbolic_index_high(image_space)
        self.write = write
        self.n_queries = n_queries
        self.pattern_dim = pattern_dim
        self.memory_noise_std = memory_noise_std
        self.encoder = ObservationEncoder(image_space.shape, index_high, pattern_dim, embedding_dim, encoder_hidden)
        energy = MLPEnergy(pattern_dim, hidden=memory_hidden, fast_units=fast_units, hops=hops, hop_dim=hop_dim)
        self.memory = EBMM(
            energy,
            write_steps=write_steps,
            read_steps=read_steps,
            stream_steps=stream_steps,
            projection=(-1.0, 1.0),
            grad_mode=grad_mode,
            gradient_penalty=gradient_penalty,
        )
        self.query = nn.Sequential(nn.Linear(pattern_dim, pattern_dim * n_queries), nn.Tanh())
        self.head = nn.Sequential(nn.Linear(pattern_dim * (1 + n_queries), features_dim), nn.ReLU())

    @property
    def memory_size(self) -> int:
        """Floats in one environment's memory."""
        return self.memory.memory_size

    def encode_window(self, observations: dict[str, Tensor], distinct: bool) -> tuple[IndexedPatterns, Tensor]:
        """Patterns and validity of the episode's window.

        :param distinct: encode each distinct observation of the batch's windows once. Windows overlap and episodes
            repeat their few views (a training minibatch of 256 windows of 8 holds some 50 distinct observations), so
            this cuts the encoder's and the write's work, and their backward, to a fraction; for a few environments
            acting without a graph, finding them costs more than it saves.
        :return: patterns (``rows`` ``[distinct or batch * window, pattern_dim]``, ``index`` ``[batch, window]``) and
            mask ``[batch, window]`` (bool)
        """
        images, directions = observations["window_image"], observations["window_direction"]
        mask = observations["window_mask"] > 0.5
        batch, window = mask.shape
        images, directions = images.flatten(0, 1), directions.flatten(0, 1)  # [batch * window, H, W, 3], [.. ]
        if distinct:
            first, row = self.encoder.distinct(images, directions)  # [distinct], [batch * window]
            images, directions = images[first], directions[first]
        else:
            row = torch.arange(batch * window, device=mask.device)
        return IndexedPatterns(self.encoder(images, directions), row.reshape(batch, window)), mask

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
        # environments). Its output is an inference tensor, which SB3 only reads.
        with torch.inference_mode():
            return self._features(observations, distinct=False)

    def _features(self, observations: dict[str, Tensor], distinct: bool) -> Tensor:
        patterns, mask = self.encode_window(observations, distinct)
        if not distinct:
            return self._window_features(patterns, mask)
        # Equal windows (same observations, same mask) give equal features, the query coming from their last slot. Once
        # a policy settles, a minibatch of 256 T-maze windows holds some 15 distinct ones.
        window_symbols = patterns.index * 2 + mask.long()  # [batch, window]
        first, row = distinct_rows(window_symbols, (2 * patterns.rows.shape[0] - 1).bit_length())
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


def _check_window_space(observation_space: spaces.Space) -> None:
    keys = observation_space.spaces if isinstance(observation_space, spaces.Dict) else {}
    missing = [key for key in WINDOW_KEYS if key not in keys]
    if missing:
        raise ValueError(
            f"EBMMExtractor needs a Dict observation with keys {WINDOW_KEYS}; missing {missing} in {observation_space}. "
            "Wrap a MiniGrid env with ebmm_rl.envs.make_env(env_id, window=T) (it applies ebmm_rl.envs.EpisodicWindow)."
        )
