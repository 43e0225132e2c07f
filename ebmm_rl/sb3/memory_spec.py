"""The memory of both EBMM agents from one specification: :func:`build_memory`.

:class:`~ebmm_rl.sb3.extractor.EBMMExtractor` and :class:`~ebmm_rl.sb3.recurrent.EBMMRecurrentPolicy` take the same
``memory`` argument, a mapping of the names below (a config's ``memory:`` key under ``features_extractor_kwargs`` or
``policy_kwargs``), and build their EBMM with this one function.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping
from typing import Any

from ebmm_rl.memory import EBMM, MLPEnergy

ENERGY_KEYS = ("pattern_dim", "hidden", "fast_units", "hops", "hop_dim")
"""The energy network's sizes (:class:`~ebmm_rl.memory.MLPEnergy`: ``dim`` is ``pattern_dim``)."""
EBMM_KEYS = tuple(name for name in inspect.signature(EBMM).parameters if name not in ("energy", "projection"))
"""The EBMM's own arguments, by the core's names (``grad_mode`` in :data:`ebmm_rl.memory.GRAD_MODES`, ...)."""

MEMORY_DEFAULTS: dict[str, Any] = {
    "pattern_dim": 16,
    "hidden": 32,
    "fast_units": 16,
    "hops": 1,
    "hop_dim": 32,
    "write_steps": 1,
    "read_steps": 1,
    "grad_mode": "second_order",
    "gradient_penalty": False,
}
"""A small, fast memory: one write and one read step without the gradient-norm term (the T-maze's, which solved it
3/3 at 1.7x the fps of the full writing loss). Keys it leaves out take :class:`~ebmm_rl.memory.EBMM`'s defaults."""


def memory_spec(memory: Mapping[str, Any] | None) -> dict[str, Any]:
    """:data:`MEMORY_DEFAULTS` updated with ``memory``, its keys checked.

    :param memory: some of :data:`ENERGY_KEYS` and :data:`EBMM_KEYS`, or None for the defaults
    :raises ValueError: for an unknown key, with the closest names
    """
    memory = dict(memory or {})
    known = (*ENERGY_KEYS, *EBMM_KEYS)
    for key in memory:
        if key not in known:
            suggestions = difflib.get_close_matches(str(key), known, n=3)
            hint = f" Did you mean {' or '.join(repr(s) for s in suggestions)}?" if suggestions else ""
            raise ValueError(f"Unknown memory key {key!r}.{hint} Memory keys: {', '.join(known)}.")
    return {**MEMORY_DEFAULTS, **memory}


def build_memory(memory: Mapping[str, Any] | None) -> EBMM:
    """The EBMM a specification describes, reading in the box ``(-1, 1)`` (the agents' patterns are ``tanh``).

    :param memory: see :func:`memory_spec`
    """
    spec = memory_spec(memory)
    energy = MLPEnergy(spec["pattern_dim"], **{key: spec[key] for key in ENERGY_KEYS[1:]})
    return EBMM(energy, projection=(-1.0, 1.0), **{key: value for key, value in spec.items() if key in EBMM_KEYS})
