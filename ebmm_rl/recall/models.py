"""Recall tasks and the models compared on them: what a dataset's patterns, corrupted queries and error metric are,
EBMM and MemoryNetwork built to a memory budget, the :class:`RecallMemory` views of them, and their checkpoints.

The protocol of Bartunov et al., "Meta-Learning Deep Energy-Based Memory Models", ICLR 2020, section 5:

- binary: 128-bit +-1 strings; 64 of the 128 bits of a query are corrupted (see :data:`BIT_CORRUPTIONS` for how);
  error = number of wrong bits, ``sign(retrieved) != stored``.
- images (digits, Omniglot, CIFAR-10): a random ``block x block`` square of each stored image is set to 0 (the
  paper's 16x16 of 32x32; here ``block = size // 2`` by default); error per image = squared error (digits, CIFAR-10)
  or Hamming error of the retrieval thresholded at 0.5 (binarised Omniglot).
"""

from __future__ import annotations

import difflib
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ebmm_rl.runs.atomic import write_atomically
from ebmm_rl.memory import EBMM, ConvEnergy, MemoryState, MLPEnergy, block_occlude, flip_bits
from ebmm_rl.recall.baselines import HopfieldNetwork, MemoryNetwork, ModernHopfield, RecallMemory
from ebmm_rl.recall.datasets import augment_images, binary_strings, cifar10, digits, omniglot, sample_batches

DATASETS: tuple[str, ...] = ("binary", "digits", "omniglot", "cifar10")
MODELS: tuple[str, ...] = ("ebmm", "memnet")
ENERGIES: tuple[str, ...] = ("mlp", "conv")
BIT_CORRUPTIONS: tuple[str, ...] = ("erase", "resample", "flip")
"""How the corrupted bits of a binary query are made (the paper says only "64 of 128 bits corrupted").

- "erase" (default): set to 0, "unknown"; the query keeps 64 exact bits and says which the others are. It is the
  classical partial cue of Hopfield networks (their reads accept 0), and of the two readings it is the one whose
  Hopfield errors come closest to the paper's Table 1 (pseudo-inverse: 0.0 / 0.1 bits at 16 / 32 strings against the
  paper's 0.0 / 0.0; "resample" gives 0.6 / 13.5).
- "resample": each gets a fresh random +-1 value, so about half of them (32) change and the query stays a +-1 string.
- "flip": the sign is flipped; for 64 of 128 bits the query is then exactly orthogonal to the stored string, i.e. it
  carries no information about it, so use it with fewer bits (``corrupt_bits``).
"""
IMAGE_CORRUPTION = "occlude"
METRICS = {"binary": "error_bits", "digits": "squared_error", "omniglot": "hamming_error", "cifar10": "squared_error"}

AUGMENT_SHIFT_DIVISOR = 8
"""With augmentation, images shift by up to ``max(1, size // 8)`` pixels: 1 for 8x8 digits, 4 for 32x32 images."""

BINARY_DIM = 128
BINARY_MEMORY = 8256
"""The paper's memory budget for binary strings: 128 * 127 / 2 + 128 floats, a Hopfield network's couplings and
thresholds. An MLPEnergy with hidden 128 and 64 fast units has exactly 64 * 129 = 8256."""

IMAGES_32: dict[str, Any] = {
    "energy": "conv",
    "memory": 4 * 1154,
    "hidden": 256,
    "hop_dim": 256,
    "hops": 3,
    "n_stored": 64,
    "image_size": 32,
    "corruption": IMAGE_CORRUPTION,
    "corrupt_bits": None,
    "block": None,
}
"""32x32 images (Omniglot, CIFAR-10): the paper's convolutional energy at 1154 * 4 floats."""

DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "binary": {
        "energy": "mlp",
        "memory": BINARY_MEMORY,
        "hidden": 128,
        "hop_dim": 128,
        "hops": 3,
        "n_stored": 64,
        "image_size": None,
        "corruption": "erase",
        "corrupt_bits": 64,
        "block": None,
    },
    "digits": {
        "energy": "mlp",
        "memory": 16 * 129,
        "hidden": 128,
        "hop_dim": 128,
        "hops": 3,
        "n_stored": 64,
        "image_size": 8,
        "corruption": IMAGE_CORRUPTION,
        "corrupt_bits": None,
        "block": None,
    },
    "omniglot": IMAGES_32,
    "cifar10": IMAGES_32,
}
"""Per dataset: the energy (MLP for 128-bit strings and 8x8 digits, the paper's convolutional one for 32x32 images),
the memory budget in floats, widths, N stored per memory in training, and the corruption. Digits stay 8x8 (upscaling
adds no information and 16 times the input size); their default budget of 2,064 floats is half the 64 x 64 = 4,096
raw pixel values of a memory."""


class UsageError(ValueError):
    """A command-line mistake; the CLI reports it as a usage error with its message."""


def check_choice(value: str, choices: tuple[str, ...], what: str) -> str:
    """``value`` if it is one of ``choices``, else a :class:`UsageError` that suggests the closest one."""
    if value in choices:
        return value
    close = difflib.get_close_matches(value, choices, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise UsageError(f"unknown {what} {value!r}{hint} (choose from {', '.join(choices)})")


# ---------------------------------------------------------------------------------------------- tasks
@dataclass(frozen=True)
class Task:
    """One split of a recall dataset with its corruption and error metric.

    :param dataset: one of :data:`DATASETS`
    :param images: ``[num_images, dim]`` in [0, 1], or None for random binary strings (drawn fresh every time)
    :param image_shape: ``(C, H, W)`` of the images, or None for binary strings
    :param corruption: one of :data:`BIT_CORRUPTIONS` for binary strings, "occlude" for images
    :param corrupt_bits: bits of a binary query that are corrupted
    :param block: side of the occluded square of an image query
    :param augment_shift: None, or sample images under random symmetries of the square and shifts of up to this
        many pixels (:func:`ebmm_rl.recall.datasets.augment_images`; training only)
    :param random_memories: fraction of sampled memories whose patterns are random binary images (each pixel 1 with
        the split's mean intensity as probability) instead of the split's images (training only). Their queries can
        be completed only from what was written, which pushes meta-training towards storing patterns rather than
        completing them from the slow weights' knowledge of the split.
    """

    dataset: str
    images: Tensor | None
    image_shape: tuple[int, int, int] | None
    corruption: str
    corrupt_bits: int | None
    block: int | None
    augment_shift: int | None = None
    random_memories: float = 0.0

    @property
    def dim(self) -> int:
        return BINARY_DIM if self.images is None else self.images.shape[1]

    @property
    def projection(self) -> tuple[float, float]:
        """The box patterns live in: ``(-1, 1)`` for +-1 strings, ``(0, 1)`` for images."""
        return (-1.0, 1.0) if self.images is None else (0.0, 1.0)

    @property
    def two_valued(self) -> bool:
        """Whether patterns take two values only (binary strings, binarised Omniglot): classical Hopfield networks
        apply."""
        return self.dataset in ("binary", "omniglot")

    @property
    def metric(self) -> str:
        return METRICS[self.dataset]

    def sample(self, batch: int, n: int, generator: torch.Generator) -> Tensor:
        """Stored patterns of ``batch`` memories: ``[batch, n, dim]``."""
        if self.images is None:
            return binary_strings(batch, n, BINARY_DIM, generator=generator)
        patterns = sample_batches(self.images, batch, n, generator=generator)
        if self.augment_shift is not None:
            patterns = augment_images(patterns, self.image_shape, self.augment_shift, generator=generator)
        if self.random_memories == 0:
            return patterns
        random_images = (torch.rand(patterns.shape, generator=generator) < self.images.mean()).to(patterns)
        chosen = torch.rand(batch, generator=generator) < self.random_memories  # [batch]
        return torch.where(chosen[:, None, None], random_images, patterns)

    def corrupt(self, patterns: Tensor, generator: torch.Generator) -> Tensor:
        """Queries from stored patterns: ``[batch, n, dim] -> [batch, n, dim]``."""
        if self.images is not None:
            return block_occlude(patterns, self.image_shape, self.block, generator=generator)
        if self.corruption == "flip":
            return flip_bits(patterns, self.corrupt_bits, generator=generator)
        chosen = torch.rand(patterns.shape, generator=generator).argsort(dim=-1)[..., : self.corrupt_bits]
        if self.corruption == "erase":
            replacement = torch.zeros(chosen.shape)
        else:
            replacement = 2.0 * torch.randint(0, 2, chosen.shape, generator=generator) - 1
        return patterns.scatter(-1, chosen.to(patterns.device), replacement.to(patterns))

    def error(self, retrieved: Tensor, patterns: Tensor) -> Tensor:
        """Mean error per pattern of each memory, ``[batch, n, dim] -> [batch]`` (see :data:`METRICS`)."""
        if self.metric == "error_bits":
            per_pattern = (torch.sign(retrieved) != patterns).sum(dim=-1)
        elif self.metric == "hamming_error":
            per_pattern = ((retrieved > 0.5) != (patterns > 0.5)).sum(dim=-1)
        else:
            per_pattern = (retrieved - patterns).pow(2).sum(dim=-1)
        return per_pattern.float().mean(dim=1)


def load_task(
    dataset: str,
    split: str,
    image_size: int | None = None,
    corruption: str | None = None,
    corrupt_bits: int | None = None,
    block: int | None = None,
    data_root: str | Path | None = None,
    augment: bool = False,
    random_memories: float = 0.0,
) -> Task:
    """A dataset's split with its corruption; options left None take :data:`DATASET_DEFAULTS`.

    :param dataset: one of :data:`DATASETS`
    :param split: "train" or "test"
    :param image_size: side of the square images (digits are resized, Omniglot shrunk; CIFAR-10 is 32 only)
    :param corruption: see :data:`BIT_CORRUPTIONS` for binary strings; images are occluded
    :param corrupt_bits: corrupted bits of a binary query (default 64 of 128)
    :param block: side of the occluded square (default ``image_size // 2``)
    :param data_root: where the Omniglot and CIFAR-10 archives are (default ``~/.cache/ebmm_rl``)
    :param augment: images under random symmetries of the square and shifts of up to ``max(1, size // 8)`` pixels
        (see :data:`AUGMENT_SHIFT_DIVISOR`), for training
    :param random_memories: fraction of memories of random binary images (see :class:`Task`), for training
    """
    check_choice(dataset, DATASETS, "dataset")
    if not 0 <= random_memories <= 1:
        raise UsageError(f"random_memories is a fraction of memories, in [0, 1]; got {random_memories}")
    defaults = DATASET_DEFAULTS[dataset]
    corruption = corruption or defaults["corruption"]
    if dataset == "binary":
        check_choice(corruption, BIT_CORRUPTIONS, "corruption for binary strings")
        bits = defaults["corrupt_bits"] if corrupt_bits is None else corrupt_bits
        if not 0 <= bits <= BINARY_DIM:
            raise UsageError(f"corrupt_bits must be in [0, {BINARY_DIM}], got {bits}")
        if augment:
            raise UsageError("augmentation transforms images; binary strings are drawn fresh every step, drop --augment")
        if random_memories:
            raise UsageError("binary strings are random already; drop --random-memories")
        return Task(dataset, None, None, corruption, bits, None)
    if corruption != IMAGE_CORRUPTION:
        raise UsageError(f"images are corrupted by occlusion only (corruption {IMAGE_CORRUPTION!r}), got {corruption!r}")
    size = image_size or defaults["image_size"]
    if dataset == "digits":
        data = digits(split, image_size=size)
    elif dataset == "omniglot":
        data = omniglot(split, root=data_root, image_size=size)
    else:
        if size != 32:
            raise UsageError(f"CIFAR-10 images are 32x32; drop image_size {size}")
        data = cifar10(split, root=data_root)
    block = size // 2 if block is None else block
    if not 0 < block <= size:
        raise UsageError(f"block must be in [1, {size}] for {size}x{size} images, got {block}")
    shift = max(1, size // AUGMENT_SHIFT_DIVISOR) if augment else None
    return Task(dataset, data.images, data.image_shape, corruption, None, block, shift, random_memories)


# ---------------------------------------------------------------------------------------------- models
def fast_size(energy: str, memory: int, hidden: int = 128, bottleneck: int = 64, blocks: int = 2) -> int:
    """The largest fast size whose EBMM memory fits a budget: ``fast_units`` of an :class:`MLPEnergy`
    (``fast_units * (hidden + 1)`` floats) or ``fast_channels`` of a :class:`ConvEnergy`
    (``blocks * fast_channels * (bottleneck * 9 + 1)`` floats).

    :param energy: "mlp" or "conv"
    :param memory: budget in floats
    """
    per_unit = hidden + 1 if check_choice(energy, ENERGIES, "energy") == "mlp" else blocks * (bottleneck * 9 + 1)
    if memory < per_unit:
        raise UsageError(
            f"a memory of {memory} floats is smaller than one fast unit of the {energy} energy ({per_unit} floats); "
            "raise the memory size" + (" or lower hidden" if energy == "mlp" else "")
        )
    return memory // per_unit


def model_spec(task: Task, config: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments of the model a training config asks for, sized to its memory budget.

    :param config: needs ``model``, ``memory``, ``hidden``, ``n_stored``; for EBMM also ``energy``, ``hop_dim``,
        ``hops``, ``write_steps``, ``read_steps``, ``grad_mode``
    :return: ``{"model": ..., "energy": ..., "energy_kwargs": ..., "kwargs": ...}``, what :func:`build_model` takes
        and checkpoints store
    """
    model = check_choice(config["model"], MODELS, "model")
    if model == "memnet":
        code_size = config["memory"] // config["n_stored"]
        if code_size < 1:
            raise UsageError(f"a memory of {config['memory']} floats cannot hold {config['n_stored']} slots")
        kwargs = {"dim": task.dim, "code_size": code_size, "hidden": config["hidden"], "projection": task.projection}
        return {"model": model, "energy": None, "energy_kwargs": {}, "kwargs": kwargs}
    energy = check_choice(config["energy"], ENERGIES, "energy")
    common = {"hops": config["hops"], "hop_dim": config["hop_dim"]}
    if energy == "mlp":
        units = fast_size("mlp", config["memory"], hidden=config["hidden"])
        energy_kwargs = {"dim": task.dim, "hidden": config["hidden"], "fast_units": units, **common}
    else:
        if task.image_shape is None:
            raise UsageError("the conv energy needs images; use the mlp energy for binary strings")
        energy_kwargs = {"image_shape": task.image_shape, "fast_channels": fast_size("conv", config["memory"]), **common}
    kwargs = {
        "write_steps": config["write_steps"],
        "read_steps": config["read_steps"],
        "projection": task.projection,
        "grad_mode": config["grad_mode"],
        "gradient_penalty": config.get("gradient_penalty", True),  # runs from before the option have no key
        "write_count_floor": config["n_stored"],  # fewer patterns keep the step sizes learned for this many
    }
    return {"model": model, "energy": energy, "energy_kwargs": energy_kwargs, "kwargs": kwargs}


def build_model(spec: dict[str, Any]) -> EBMM | MemoryNetwork:
    """The (untrained) model of a :func:`model_spec`."""
    if spec["model"] == "memnet":
        return MemoryNetwork(**spec["kwargs"])
    energy_cls = MLPEnergy if spec["energy"] == "mlp" else ConvEnergy
    return EBMM(energy_cls(**spec["energy_kwargs"]), **spec["kwargs"])


class EBMMRecall:
    """An EBMM seen as a :class:`RecallMemory`: ``write`` fills fresh memories (at the learned theta-bar).

    :param memory: the EBMM
    :param write: "batch" (the paper) or "stream" (one pattern at a time)
    """

    def __init__(self, memory: EBMM, write: str = "batch") -> None:
        self.memory = memory
        self.write_kind = write
        self.dim = memory.dim

    def write(self, patterns: Tensor, mask: Tensor | None = None) -> MemoryState:
        """:param patterns: ``[batch, n, dim]`` :return: state with weights ``[batch, memory_size]``"""
        state = self.memory.init_state(patterns.shape[0])
        if self.write_kind == "stream":
            return self.memory.write_stream(state, patterns, mask)
        return self.memory.write(state, patterns, mask)

    def read(self, state: MemoryState, queries: Tensor) -> Tensor:
        """:param queries: ``[batch, m, dim]`` :return: ``[batch, m, dim]``"""
        return self.memory.read(state, queries)

    def memory_size(self, n_patterns: int = 0) -> int:
        """The fast weights, whatever the number of patterns."""
        return self.memory.memory_size


class SignedRecall:
    """A memory of +-1 patterns (a classical Hopfield network) applied to two-valued images in {0, 1}: patterns and
    queries are mapped by ``2x - 1`` (an occluded pixel, 0, becomes background, -1) and retrievals back by
    ``(y + 1) / 2``.

    :param inner: the +-1 memory
    """

    def __init__(self, inner: RecallMemory) -> None:
        self.inner = inner
        self.dim = inner.dim

    def write(self, patterns: Tensor, mask: Tensor | None = None) -> Any:
        return self.inner.write(2 * patterns - 1, mask)

    def read(self, state: Any, queries: Tensor) -> Tensor:
        return (self.inner.read(state, 2 * queries - 1) + 1) / 2

    def memory_size(self, n_patterns: int) -> int:
        return self.inner.memory_size(n_patterns)


BASELINES: tuple[str, ...] = ("hebb", "storkey", "pseudo_inverse", "modern_hopfield", "modern_hopfield_capped")
BASELINE_LABELS = {
    "hebb": "Hopfield (Hebb)",
    "storkey": "Hopfield (Storkey)",
    "pseudo_inverse": "Hopfield (pseudo-inverse)",
    "modern_hopfield": "Modern Hopfield",
    "modern_hopfield_capped": "Modern Hopfield (capped)",
}
"""``modern_hopfield`` stores every pattern (``n * dim`` floats); ``modern_hopfield_capped`` keeps the last
patterns that fit the dataset's default memory (binary: 8,256 floats = 64 strings, the protocol's budget)."""


def capped_slots(task: Task) -> int:
    """Patterns of ``task`` that fit its dataset's default memory: the capped modern Hopfield network's slots."""
    return DATASET_DEFAULTS[task.dataset]["memory"] // task.dim


def applicable_baselines(task: Task) -> list[str]:
    """The baselines that can run on ``task``: classical Hopfield rules need two-valued data, the capped modern
    Hopfield network needs room for one pattern."""
    return [
        name
        for name in BASELINES
        if (task.two_valued or name.startswith("modern_hopfield"))
        and (name != "modern_hopfield_capped" or capped_slots(task) >= 1)
    ]


def build_baseline(name: str, task: Task, sweeps: int = 10, beta: float = 1.0) -> RecallMemory:
    """A baseline that needs no training, for a task.

    :param name: one of :data:`BASELINES`
    :param sweeps: maximum update sweeps of a classical Hopfield read
    :param beta: inverse temperature of the modern Hopfield network
    """
    check_choice(name, BASELINES, "baseline")
    if name == "modern_hopfield":
        return ModernHopfield(task.dim, beta=beta)
    if name == "modern_hopfield_capped":
        slots = capped_slots(task)
        if slots < 1:
            raise UsageError(
                f"{task.dataset}'s default memory ({DATASET_DEFAULTS[task.dataset]['memory']} floats) holds no "
                f"{task.dim}-float pattern; use modern_hopfield"
            )
        return ModernHopfield(task.dim, beta=beta, slots=slots)
    if not task.two_valued:
        raise UsageError(f"classical Hopfield networks store two-valued patterns; {task.dataset} images are grey")
    hopfield = HopfieldNetwork(task.dim, rule=name, sweeps=sweeps)
    return hopfield if task.images is None else SignedRecall(hopfield)


def recall_view(model: EBMM | MemoryNetwork, write: str = "batch") -> RecallMemory:
    """The :class:`RecallMemory` of a trained model."""
    return EBMMRecall(model, write) if isinstance(model, EBMM) else model


# ---------------------------------------------------------------------------------------------- checkpoints
CHECKPOINT_FILE = "checkpoint.pt"


def save_checkpoint(path: Path, payload: dict[str, Any]) -> Path:
    """``torch.save`` through a temporary file and ``os.replace``: readers see the old or the new file, never a
    partial one (e.g. after Ctrl-C during a save)."""
    return write_atomically(path, lambda temporary: torch.save(payload, temporary))


def checkpoint_path(path: str | Path) -> Path:
    """The checkpoint file of a run directory (or the file itself).

    :raises UsageError: there is none
    """
    path = Path(path)
    candidate = path / CHECKPOINT_FILE if path.is_dir() else path
    if not candidate.is_file():
        raise UsageError(
            f"no checkpoint at {candidate}: pass a run directory written by `python -m ebmm_rl.recall train` "
            f"(it holds {CHECKPOINT_FILE}) or the checkpoint file itself"
        )
    return candidate


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's content (tensors on the CPU): ``step``, ``config``, ``spec``, ``model``, ``optimizer``,
    ``generator``, ``elapsed``."""
    file = checkpoint_path(path)
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise UsageError(
            f"{file} is unreadable ({type(error).__name__}: {' '.join(str(error).split())}); it may be truncated or damaged: "
            "train the run again or use another checkpoint"
        ) from None
    if not isinstance(payload, dict) or "spec" not in payload:
        raise UsageError(f"{file} is not a checkpoint of `python -m ebmm_rl.recall train`")
    return payload


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The trained model of a checkpoint and its training config."""
    payload = load_checkpoint(path)
    model = build_model(payload["spec"])
    model.load_state_dict(payload["model"])
    return model.eval(), payload["config"]
