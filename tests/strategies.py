"""Hypothesis strategies shared by the test suite (one place, as in attrs' tests)."""

from __future__ import annotations

import zlib

from hypothesis import strategies as st

from offsetledger.core import Header, TopicPartition, encode_finished
from offsetledger.core._metadata import MAGIC, MAGIC_V1

__all__ = [
    "chunks",
    "finished_offsets",
    "foreign_metadata",
    "garbage_metadata",
    "headers",
    "metadata_for",
    "mutated",
    "mutated_encodings",
    "offsets",
    "positions",
    "runs",
    "topic_partitions",
    "topics",
    "valid_encodings",
    "with_crc",
]

topics = st.text(
    alphabet=st.characters(whitelist_categories=("Ll", "Lu", "Nd"), whitelist_characters="._-"),
    min_size=1,
    max_size=20,
)
positions = st.integers(min_value=0, max_value=2**40)
offsets = positions
topic_partitions = st.builds(TopicPartition, topics, st.integers(min_value=0, max_value=64))
headers: st.SearchStrategy[list[Header]] = st.lists(
    st.tuples(st.text(max_size=8), st.none() | st.binary(max_size=8)), max_size=4
)


@st.composite
def finished_offsets(draw: st.DrawFn, position: int, *, max_size: int = 40) -> list[int]:
    """Sorted distinct offsets at or above ``position``, clustered so runs form."""
    gaps = draw(st.lists(st.integers(min_value=0, max_value=5), max_size=max_size))
    out: list[int] = []
    nxt = position
    for gap in gaps:
        nxt += gap
        out.append(nxt)
        nxt += 1
    return out


def with_crc(body: str) -> str:
    """``body`` completed with the codec's checksum: well-formed, maybe nonsense."""
    return f"{body};{zlib.crc32(body.encode('ascii')):08x}"


@st.composite
def metadata_for(draw: st.DrawFn, position: int, *, budget: int = 4096) -> tuple[str, list[int]]:
    """A valid encoding for ``position`` and the offsets it was asked to carry."""
    finished = draw(finished_offsets(position))
    return encode_finished(position, finished, budget=budget), finished


@st.composite
def mutated(draw: st.DrawFn, text: str) -> str:
    """``text`` truncated, with characters replaced, inserted or deleted."""
    chars = list(text)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        op = draw(st.sampled_from(["truncate", "replace", "insert", "delete", "append"]))
        index = draw(st.integers(min_value=0, max_value=max(len(chars) - 1, 0)))
        char = draw(st.sampled_from("0123456789abcdefghijklmnopqrstuvwxyz;,.OLZ é\x00"))
        if op == "truncate":
            chars = chars[:index]
        elif op == "replace" and chars:
            chars[index] = char
        elif op == "insert":
            chars.insert(index, char)
        elif op == "delete" and chars:
            del chars[index]
        else:
            chars.append(char)
    return "".join(chars)


foreign_metadata = st.one_of(
    st.text(max_size=200),
    st.text(alphabet="0123456789abcdefghijklmnopqrstuvwxyz;,.", max_size=200).map(
        lambda s: MAGIC_V1 + ";" + s
    ),
    st.text(alphabet="0123456789abcdefghijklmnopqrstuvwxyz;,.", max_size=200).map(
        lambda s: MAGIC + ";" + s
    ),
    st.sampled_from(["OL2;0;;00000000", "ol1;0;;00000000", "{}", "arroyo:1", "OL1", "OL1;"]),
    st.text(alphabet="0123456789abcdefghijklmnopqrstuvwxyz;,.", max_size=60).map(
        lambda s: with_crc("XX9;" + s)
    ),
)


@st.composite
def runs(
    draw: st.DrawFn, start: int = 0, max_runs: int = 20, max_gap: int = 40, max_len: int = 40
) -> list[tuple[int, int]]:
    """Sorted, disjoint, non-adjacent half-open runs ``[s, e)`` with ``s >= start``."""
    out: list[tuple[int, int]] = []
    prev_end = start
    for _ in range(draw(st.integers(0, max_runs))):
        gap = draw(st.integers(1 if out else 0, max_gap))
        length = draw(st.integers(1, max_len))
        s = prev_end + gap
        out.append((s, s + length))
        prev_end = s + length
    return out


@st.composite
def valid_encodings(draw: st.DrawFn) -> tuple[int, list[tuple[int, int]], str]:
    """A position, runs above it, and their encoding with a budget big enough for all."""
    position = draw(st.one_of(st.integers(0, 50), positions))
    rs = draw(runs(start=position))
    return position, rs, encode_finished(position, runs=rs, budget=1_000_000)


@st.composite
def mutated_encodings(draw: st.DrawFn) -> tuple[int, str, str]:
    """A position, a valid encoding for it, and a different string made from it by
    truncation or edits (see :func:`mutated`) or by re-casing."""
    position, _rs, good = draw(valid_encodings())
    bad = good.upper() if draw(st.booleans()) and good.upper() != good else draw(mutated(good))
    if bad == good:  # e.g. a character replaced by itself
        bad = good + "x"
    return position, good, bad


#: Strings that are not a valid encoding for any position (up to a CRC-32 collision).
garbage_metadata = st.one_of(
    foreign_metadata,
    st.binary(max_size=100).map(lambda b: b.decode("latin-1")),
    st.from_regex(rf"\A{MAGIC_V1};[0-9a-z]{{0,4}};[0-9a-z.,]{{0,30}};[0-9a-f]{{0,9}}\Z"),
    st.from_regex(
        rf"\A{MAGIC};[0-9a-f]{{0,9}};[0-9a-z]{{0,4}};[0-9a-z.,]{{0,30}};[0-9a-f]{{0,9}}\Z"
    ),
    mutated_encodings().map(lambda t: t[2]),
)


@st.composite
def chunks(
    draw: st.DrawFn, position: int, *, max_chunks: int = 8, max_size: int = 12
) -> list[list[int]]:
    """Consecutive polls of one partition from ``position``: each a non-empty,
    strictly ascending list of offsets, gaps allowed inside and between chunks."""
    out: list[list[int]] = []
    nxt = position
    for _ in range(draw(st.integers(min_value=1, max_value=max_chunks))):
        gaps = draw(st.lists(st.sampled_from([0, 0, 0, 1, 2, 7]), min_size=1, max_size=max_size))
        chunk = []
        for gap in gaps:
            chunk.append(nxt + gap)
            nxt = chunk[-1] + 1
        out.append(chunk)
    return out
