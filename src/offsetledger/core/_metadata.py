"""The commit-metadata codec.

Finished offsets above the committed position travel with the commit, in the
metadata string Kafka keeps beside each committed offset, so that a consumer that
takes the partition over can skip records that were already finished.

Format (version 2, written by the ledger), ASCII only::

    OL2;<binding>;<position>;<ranges>;<crc>

* ``binding``: what the string belongs to, 8 lower-case hex digits: CRC-32 of the
  consumer group, topic and partition (:func:`metadata_binding`). A well-formed
  string written by another group, or for another topic or partition (copied
  offsets, a renamed group, a tool that commits for several groups) restores
  nothing: it is ignored with one warning;
* ``position``: the committed position the offsets belong to, base 36;
* ``ranges``: comma-separated runs of finished offsets, each ``gap`` or
  ``gap.length`` in base 36, where ``gap`` is the distance from the end of the
  previous run (the first from ``position``) and ``length`` defaults to 1;
* ``crc``: CRC-32 of everything before it, 8 lower-case hex digits.

Version 1 (``OL1;<position>;<ranges>;<crc>``, no binding) is still read, so
metadata committed by an older release keeps its meaning after an upgrade;
:func:`encode_finished` writes it when no binding is given.

Decoding never raises: anything not produced by this encoder for the same
committed position (garbage, another library's metadata, a truncated string,
a string over the budget) decodes to "nothing finished" with a logged warning.
That can only cause a duplicate, never a skipped record.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterable, Sequence

from offsetledger.core._types import TopicPartition

__all__ = [
    "DEFAULT_METADATA_BUDGET",
    "MAGIC",
    "MAGIC_V1",
    "decode_finished",
    "encode_finished",
    "encode_finished_counted",
    "metadata_binding",
]

log = logging.getLogger("offsetledger.metadata")

MAGIC = "OL2"  #: the version the ledger writes: bound to group, topic and partition
MAGIC_V1 = "OL1"  #: the unbound version 1, still read
#: Default byte budget, below Kafka's default ``offset.metadata.max.bytes`` (4096).
DEFAULT_METADATA_BUDGET = 3072
_MAX_RUNS = 100_000
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def _b36(n: int) -> str:
    if n == 0:
        return "0"
    out = []
    while n:
        n, r = divmod(n, 36)
        out.append(_DIGITS[r])
    return "".join(reversed(out))


def metadata_binding(group: str | None, tp: TopicPartition) -> str:
    """The 8-hex-digit binding of commit metadata to consumer ``group`` (None or ""
    when unknown), ``tp.topic`` and ``tp.partition``."""
    key = f"{group or ''}\x00{tp.topic}\x00{tp.partition}".encode()
    return f"{zlib.crc32(key):08x}"


def _runs(offsets: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted distinct offsets -> half-open runs [start, end)."""
    runs: list[tuple[int, int]] = []
    for off in offsets:
        if runs and off == runs[-1][1]:
            runs[-1] = (runs[-1][0], off + 1)
        elif runs and off < runs[-1][1]:
            continue  # duplicate
        else:
            runs.append((off, off + 1))
    return runs


def encode_finished(
    position: int,
    finished: Iterable[int] | None = None,
    *,
    runs: Sequence[tuple[int, int]] | None = None,
    budget: int = DEFAULT_METADATA_BUDGET,
    binding: str | None = None,
) -> str:
    """Encode finished offsets above ``position`` within ``budget`` bytes.

    Give either sorted ``finished`` offsets or sorted disjoint half-open ``runs``.
    With a ``binding`` (:func:`metadata_binding`) the string is version 2, bound to
    that group and partition; without one it is the unbound version 1.
    Offsets below ``position`` are ignored. Runs that do not fit are dropped,
    highest first: a dropped offset is processed again later (a duplicate), it is
    never skipped.
    """
    return encode_finished_counted(position, finished, runs=runs, budget=budget, binding=binding)[0]


def encode_finished_counted(
    position: int,
    finished: Iterable[int] | None = None,
    *,
    runs: Sequence[tuple[int, int]] | None = None,
    budget: int = DEFAULT_METADATA_BUDGET,
    binding: str | None = None,
) -> tuple[str, int]:
    """:func:`encode_finished`, plus how many finished offsets (gaps inside runs
    included) were dropped because they did not fit the budget."""
    if position < 0:
        raise ValueError(f"position must be >= 0, got {position}")
    if runs is None:
        runs = _runs(sorted(o for o in (finished or ()) if o >= position))
    if binding is None:
        head = f"{MAGIC_V1};{_b36(position)};"
    else:
        if len(binding) != 8 or any(c not in "0123456789abcdef" for c in binding):
            raise ValueError(f"binding must be 8 lower-case hex digits, got {binding!r}")
        head = f"{MAGIC};{binding};{_b36(position)};"
    room = budget - len(head) - 9  # ";" + 8 hex digits
    if room < 0:
        raise ValueError(f"metadata budget {budget} is too small for the header")
    parts: list[str] = []
    used = 0
    prev_end = position
    dropped = 0
    for start, end in runs:
        if end <= prev_end:
            continue
        start = max(start, prev_end)  # noqa: PLW2901 - clamp to what is left
        if dropped:
            dropped += end - start
            continue
        gap, length = start - prev_end, end - start
        token = _b36(gap) if length == 1 else f"{_b36(gap)}.{_b36(length)}"
        cost = len(token) + (1 if parts else 0)
        if used + cost > room:
            dropped += length
            continue
        parts.append(token)
        used += cost
        prev_end = end
    body = head + ",".join(parts)
    return f"{body};{zlib.crc32(body.encode('ascii')):08x}", dropped


def decode_finished(
    metadata: str | None,
    position: int | None,
    *,
    budget: int = DEFAULT_METADATA_BUDGET,
    binding: str | None = None,
) -> list[tuple[int, int]]:
    """Decode metadata written for committed ``position`` into sorted disjoint
    half-open runs of finished offsets. Returns ``[]`` (and logs one warning when
    the string is not empty and not ours) for anything it cannot trust.

    ``binding`` is the reader's :func:`metadata_binding`: a version-2 string bound
    to anything else is ignored. Without it the binding is not checked (the ledger
    always passes it). Version-1 strings carry no binding and are read either way."""
    if not metadata or position is None:
        return []
    try:
        return _decode(metadata, position, budget, binding)
    except _UntrustedError as exc:
        log.warning("ignoring commit metadata at position %s: %s", position, exc)
        return []


class _UntrustedError(Exception):
    pass


def _int36(text: str) -> int:
    if not text or len(text) > 13 or any(c not in _DIGITS for c in text):
        raise _UntrustedError(f"bad number {text[:20]!r}")
    return int(text, 36)


def _decode(
    metadata: str, position: int, budget: int, binding: str | None
) -> list[tuple[int, int]]:
    if len(metadata) > budget:
        raise _UntrustedError(f"{len(metadata)} characters is over the {budget}-byte budget")
    if not metadata.isascii():
        raise _UntrustedError("not ASCII")
    if metadata.startswith(MAGIC + ";"):
        bound = True
    elif metadata.startswith(MAGIC_V1 + ";"):
        bound = False
    else:
        raise _UntrustedError(f"not offsetledger metadata (no {MAGIC} or {MAGIC_V1} prefix)")
    body, sep, crc = metadata.rpartition(";")
    if not sep or len(crc) != 8 or f"{zlib.crc32(body.encode('ascii')):08x}" != crc:
        raise _UntrustedError("checksum mismatch (truncated or altered)")
    fields = body.split(";")
    if bound:
        if len(fields) != 4:
            raise _UntrustedError("wrong number of fields")
        written_for = fields.pop(1)
        if binding is not None and written_for != binding:
            raise _UntrustedError(
                f"written for another consumer group, topic or partition (binding "
                f"{written_for[:8]!r}, this one is {binding!r})"
            )
    if len(fields) != 3:
        raise _UntrustedError("wrong number of fields")
    base = _int36(fields[1])
    if base != position:
        raise _UntrustedError(f"written for position {base}, committed position is {position}")
    runs: list[tuple[int, int]] = []
    prev_end = position
    if fields[2]:
        tokens = fields[2].split(",")
        if len(tokens) > _MAX_RUNS:
            raise _UntrustedError("too many runs")
        for token in tokens:
            gap_s, dot, len_s = token.partition(".")
            gap = _int36(gap_s)
            length = _int36(len_s) if dot else 1
            if length < 1:
                raise _UntrustedError("empty run")
            start = prev_end + gap
            if runs and gap == 0:
                raise _UntrustedError("runs not separated")
            runs.append((start, start + length))
            prev_end = start + length
    return runs
