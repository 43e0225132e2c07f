"""The image-recall validation suite's baselines and datasets (Bartunov et al., ICLR 2020, section 5)."""

from ebmm_rl.recall.baselines import (
    HOPFIELD_RULES,
    HopfieldNetwork,
    HopfieldState,
    MemoryNetwork,
    ModernHopfield,
    RecallMemory,
    SlotState,
)
from ebmm_rl.recall.datasets import (
    ImageData,
    binary_strings,
    cifar10,
    default_data_root,
    digits,
    omniglot,
    sample_batches,
)
from ebmm_rl.recall.models import DATASETS, EBMMRecall, Task, build_baseline, fast_size, load_model, load_task

__all__ = [
    "HOPFIELD_RULES",
    "HopfieldNetwork",
    "HopfieldState",
    "ImageData",
    "MemoryNetwork",
    "ModernHopfield",
    "RecallMemory",
    "SlotState",
    "binary_strings",
    "cifar10",
    "default_data_root",
    "digits",
    "omniglot",
    "sample_batches",
]
__all__ += ["DATASETS", "EBMMRecall", "Task", "build_baseline", "fast_size", "load_model", "load_task"]
