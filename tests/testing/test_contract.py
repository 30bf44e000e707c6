"""The handler contract: async handlers refused at construction, wrong return types
one kind of error (HandlerContractError) naming the record, never a crash of step()."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import pytest

from offsetledger.core import OffsetLedgerError, Outbound, Record
from offsetledger.runtime import Processor, ProcessorConfig, RetryPolicy
from offsetledger.runtime._contract import HandlerContractError, check_handler, coerce_outputs
from tests.processor.helpers import all_committed, dead_letters, drive, make_processor, seed_world

RECORD = Record("in", 2, 7, key=b"k", value=b"v")


async def async_handler(record: Record) -> list[Outbound]:
    return []


class AsyncCallable:
    async def __call__(self, record: Record) -> list[Outbound]:
        return []


def test_contract_error_is_a_type_error_and_an_offsetledger_error() -> None:
    assert issubclass(HandlerContractError, TypeError)
    assert issubclass(HandlerContractError, OffsetLedgerError)


@pytest.mark.parametrize(
    "handler",
    [async_handler, AsyncCallable(), functools.partial(async_handler)],
    ids=["async-def", "async-callable", "partial-of-async"],
)
def test_async_handlers_select_the_asyncio_runner(handler: object) -> None:
    # (issue 14: async handlers are accepted; the contract for them is tests/aio's)
    from offsetledger.runtime._runners.aio import AsyncRunner

    world = seed_world(0, records=1)
    processor = make_processor(world, "m", handler)  # type: ignore[arg-type]
    assert isinstance(processor._runner, AsyncRunner)


def test_a_non_callable_handler_is_refused() -> None:
    with pytest.raises(HandlerContractError, match="must be callable"):
        check_handler(42)


def test_plain_functions_and_callables_pass() -> None:
    class Plain:
        def __call__(self, record: Record) -> list[Outbound]:
            return []

    check_handler(lambda r: [])
    check_handler(Plain())
    check_handler(functools.partial(lambda r, n: [], n=1))


def _gen() -> Iterator[Outbound]:
    yield Outbound("out", value=b"x")


@pytest.mark.parametrize(
    "result",
    [[], [Outbound("out", value=b"x")], (Outbound("out"),), _gen(), iter([])],
    ids=["empty", "list", "tuple-of-outbound", "generator", "iterator"],
)
def test_iterables_of_outbound_are_accepted(result: object) -> None:
    outputs = coerce_outputs(result, RECORD)
    assert isinstance(outputs, list)
    assert all(isinstance(o, Outbound) for o in outputs)


def _unvalidated(**fields: object) -> Outbound:
    """An Outbound built around its validators (as attrs.validators.disabled would)."""
    message = Outbound("out")
    for name, value in fields.items():
        object.__setattr__(message, name, value)
    return message


@pytest.mark.parametrize(
    ("result", "what"),
    [
        (None, "got None"),
        (Outbound("out", value=b"x"), "one Outbound"),
        ("text", "got str"),
        (b"raw", "got bytes"),
        ({"topic": "out"}, "got dict"),
        (5, "not an iterable"),
        ((("out", b"x"),), "item 0 is tuple"),
        ([Outbound("out"), {"topic": "out"}], "item 1 is dict"),
        ([_unvalidated(value="text")], "str value"),
        ([_unvalidated(value={"a": 1})], "dict value"),
        ([_unvalidated(key=7)], "int key"),
    ],
    ids=[
        "none",
        "one-outbound",
        "str",
        "bytes",
        "dict",
        "int",
        "tuple-not-of-outbound",
        "dict-in-list",
        "str-value",
        "dict-value",
        "int-key",
    ],
)
def test_wrong_results_raise_one_error_naming_the_record(result: object, what: str) -> None:
    with pytest.raises(HandlerContractError, match=what) as info:
        coerce_outputs(result, RECORD)
    assert "in[2] offset 7" in str(info.value)
    assert info.value.record == RECORD


@pytest.mark.parametrize(
    "returned",
    [
        lambda r: Outbound("out", value=r.value),
        lambda r: None,
        lambda r: (("out", r.value),),
    ],
    ids=["one-outbound", "none", "tuple-of-tuples"],
)
def test_a_wrong_return_type_is_dead_lettered_not_a_crash_of_step(returned: object) -> None:
    """On main a tuple of tuples raised TypeError out of step() and killed the loop
    while None or one Outbound were retried: now every one is the same
    HandlerContractError, dead-lettered with it in the error header."""
    world = seed_world(5, records=8, topics=("out", "dlq"))
    config = ProcessorConfig(
        poll_timeout=0.05,
        dead_letter_topic="dlq",
        retry=RetryPolicy(max_attempts=2, backoff_base=0.01, backoff_max=0.01),
    )
    processor: Processor = make_processor(world, "m", returned, config=config)  # type: ignore[arg-type]
    drive(world, [processor], lambda: all_committed(world))
    letters = dead_letters(world)
    assert len(letters) == 8, f"seed={world.seed}"
    assert all(
        (d["offsetledger.error"] or b"").startswith(b"HandlerContractError") for d in letters
    ), letters[0]
