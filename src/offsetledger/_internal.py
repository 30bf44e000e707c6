"""Internals shared by the outer layers (the confluent adapter and the simulator).

* :func:`slot_setters`: build attrs slotted, frozen instances on a hot path without
  their generated ``__init__`` (which runs every validator and sets each field
  through ``object.__setattr__``), for values already known to be valid. Used only
  when the class's fields are exactly the ones set, so an added field falls back
  to the validating constructor and objects are always complete.
* :data:`AUTO_OFFSET_RESET_ALIASES`: librdkafka's spellings of ``auto.offset.reset``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

__all__ = ["AUTO_OFFSET_RESET_ALIASES", "slot_setters"]

#: librdkafka's accepted values of ``auto.offset.reset`` -> what they mean.
AUTO_OFFSET_RESET_ALIASES: dict[str, str] = {
    "earliest": "earliest",
    "smallest": "earliest",
    "beginning": "earliest",
    "latest": "latest",
    "largest": "latest",
    "end": "latest",
    "error": "error",
}


def slot_setters(
    cls: type[Any], names: tuple[str, ...]
) -> tuple[Callable[[object, object], None], ...] | None:
    """The slot descriptors' setters for ``names``, in order, when they are exactly
    ``cls``'s attrs fields; None otherwise (then use the class's constructor)."""
    if tuple(f.name for f in attrs.fields(cls)) != names:
        return None
    out = []
    for name in names:
        for klass in cls.__mro__:
            if name in klass.__dict__:
                out.append(klass.__dict__[name].__set__)
                break
        else:  # pragma: no cover - attrs slotted classes always have the descriptor
            return None
    return tuple(out)
