"""The handler contract, checked where it can be.

A handler takes one :class:`~offsetledger.core.Record` and returns the
:class:`~offsetledger.core.Outbound` messages to produce for it: a list (or any
other iterable) of ``Outbound``, empty to produce nothing. A *batch handler*
(marked with :func:`batch_handler`) takes a sequence of records and returns one
entry per record, in order: that record's outputs, or an ``Exception`` instance to
fail just that record (it then retries and dead-letters on its own); raising fails
every record of the batch. Two checks enforce the contract:

* :func:`check_handler` at Processor construction: an ``async def`` handler (or an
  object whose ``__call__`` is one, or a ``functools.partial`` of one) is refused,
  because calling it returns a coroutine that never runs.
* :func:`coerce_outputs` on every handler result: anything that is not an iterable
  of ``Outbound`` raises :class:`HandlerContractError`, naming the record and what
  was wrong. It is a programming error, the same one everywhere: a
  :class:`TypeError` (so a retry policy that treats ``TypeError`` as fatal does not
  retry it) and an :class:`~offsetledger.core.OffsetLedgerError`.

``Outbound`` validates its own fields when the handler builds it (a ``str`` or
``dict`` value, a non-bytes key raise ``TypeError`` inside the handler);
:func:`coerce_outputs` checks them again for messages built around those
validators, so a wrong value never reaches the producer.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from offsetledger.core import OffsetLedgerError, Outbound, Record

__all__ = [
    "BatchResult",
    "HandlerContractError",
    "batch_handler",
    "check_handler",
    "coerce_batch",
    "coerce_outputs",
    "is_async",
    "is_batch_handler",
]

#: What a batch handler returns for one record: its outputs, or an Exception
#: instance failing just that record.
BatchResult = Iterable[Outbound] | Exception

_BATCH_MARK = "__offsetledger_batch__"
_F = TypeVar("_F", bound=Callable[..., Any])


def batch_handler(func: _F) -> _F:
    """Mark ``func`` as a batch handler: the Processor calls it with a sequence of
    records (see :class:`~offsetledger.runtime.Processor` for which records form a
    batch) and expects a sequence with one entry per record, in order: that record's
    outputs (an iterable of Outbound, empty for none) or an ``Exception`` instance
    that fails just that record. Raising fails the whole batch: each record retries
    (alone) and dead-letters on its own. Returns ``func`` itself, marked."""
    try:
        setattr(func, _BATCH_MARK, True)
    except (AttributeError, TypeError):  # e.g. a bound method or a builtin
        raise HandlerContractError(
            f"batch_handler cannot mark {type(func).__name__} {func!r}; decorate the "
            "function (or the class's __call__) instead"
        ) from None
    return func


def is_batch_handler(handler: object) -> bool:
    """True when ``handler`` (or what a ``functools.partial`` wraps, or its class's
    ``__call__``) was marked with :func:`batch_handler`."""
    func = handler
    while isinstance(func, functools.partial):
        func = func.func
    if getattr(func, _BATCH_MARK, False):
        return True
    call = getattr(type(func), "__call__", None)  # noqa: B004 - the class's, not the instance's
    return bool(getattr(call, _BATCH_MARK, False))


class HandlerContractError(OffsetLedgerError, TypeError):
    """A handler broke its contract: it is async, or it returned something that is not
    an iterable of :class:`~offsetledger.core.Outbound`. ``record`` is the record it
    was called with (None when the handler was refused at construction)."""

    def __init__(self, message: str, record: Record | None = None) -> None:
        super().__init__(message)
        self.record = record


def is_async(func: object) -> bool:
    """True for an ``async def`` handler (also through ``functools.partial`` or an
    object whose ``__call__`` is one): it selects the asyncio runner."""
    return _is_async(func)


def _is_async(func: object) -> bool:
    while isinstance(func, functools.partial):
        func = func.func
    if inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func):
        return True
    if not inspect.isfunction(func) and not inspect.ismethod(func):
        call = getattr(type(func), "__call__", None)  # noqa: B004 - the class's, not the instance's
        if call is not None and (
            inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call)
        ):
            return True
    return False


def check_handler(handler: object, *, name: str = "handler", allow_async: bool = False) -> None:
    """Refuse what cannot be a handler: not callable, or ``async`` (unless
    ``allow_async``: the Processor passes it once an asyncio runner exists, see
    ``offsetledger.runtime._runners.runner_for``).

    Raises :class:`HandlerContractError` with a message saying what to do."""
    if not callable(handler):
        raise HandlerContractError(
            f"{name} must be callable (record -> list[Outbound]), got {type(handler).__name__}"
        )
    if _is_async(handler) and not allow_async:
        label = getattr(handler, "__qualname__", None) or type(handler).__name__
        raise HandlerContractError(
            f"{name} {label} is an async function: the Processor calls handlers "
            "synchronously, so its coroutine would never run. Write it as a plain "
            "`def` (run async work with asyncio.run inside it if you must)"
        )


def _where(record: Record) -> str:
    return f"handler result for {record.topic}[{record.partition}] offset {record.offset}"


def _describe(value: object) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _check_message(message: Outbound, record: Record, index: int) -> None:
    value = message.value
    if value is not None and not isinstance(value, bytes):
        raise HandlerContractError(
            f"{_where(record)}: output {index} to {message.topic!r} has a "
            f"{type(value).__name__} value; values must be bytes or None "
            "(encode it, e.g. json.dumps(v).encode())",
            record,
        )
    key = message.key
    if key is not None and not isinstance(key, bytes):
        raise HandlerContractError(
            f"{_where(record)}: output {index} to {message.topic!r} has a "
            f"{type(key).__name__} key; keys must be bytes or None",
            record,
        )


def _wrong_element(element: object, record: Record, index: int) -> HandlerContractError:
    hint = ""
    if isinstance(element, Mapping):
        hint = "; build Outbound(topic=..., value=...) instead of a dict"
    elif isinstance(element, tuple):
        hint = "; build Outbound(topic, value) instead of a tuple"
    elif isinstance(element, (str, bytes)):
        hint = "; wrap the value: Outbound(topic, value=...)"
    return HandlerContractError(
        f"{_where(record)}: item {index} is {_describe(element)}, not an Outbound{hint}",
        record,
    )


def coerce_outputs(result: Any, record: Record) -> list[Outbound]:
    """The handler's ``result`` as a list of Outbound messages, or
    :class:`HandlerContractError` naming ``record`` and what was wrong.

    Accepted: a list, tuple, generator or any other iterable of Outbound (empty:
    nothing to produce). Refused: None, one Outbound instead of a list, a str,
    bytes or dict, an iterable with anything else in it, an Outbound whose value
    or key is not bytes."""
    if type(result) is list:
        for message in result:
            if type(message) is not Outbound:
                break
            value, key = message.value, message.key
            if (value is not None and type(value) is not bytes) or (
                key is not None and type(key) is not bytes
            ):
                break
        else:
            return result  # the common case: a list of well-formed messages
        outputs: list[Any] = result
    else:
        if result is None:
            raise HandlerContractError(
                f"{_where(record)}: got None; return a list of Outbound ([] to produce nothing)",
                record,
            )
        if isinstance(result, Outbound):
            raise HandlerContractError(
                f"{_where(record)}: got one Outbound (to {result.topic!r}) instead of a "
                "list; return [Outbound(...)]",
                record,
            )
        if isinstance(result, (str, bytes, bytearray, Mapping)):
            raise HandlerContractError(
                f"{_where(record)}: got {_describe(result)}; return a list of Outbound",
                record,
            )
        if not isinstance(result, Iterable):
            raise HandlerContractError(
                f"{_where(record)}: got {_describe(result)}, not an iterable; "
                "return a list of Outbound",
                record,
            )
        outputs = list(result)
    for index, message in enumerate(outputs):
        if not isinstance(message, Outbound):
            raise _wrong_element(message, record, index)
        _check_message(message, record, index)
    return outputs


def coerce_batch(result: Any, records: Sequence[Record]) -> list[list[Outbound] | Exception]:
    """A batch handler's ``result`` as one entry per record: its outputs (checked as
    :func:`coerce_outputs` checks them; a wrong entry fails that record with
    :class:`HandlerContractError`) or the Exception the handler returned for it.
    A result that is not a sequence of ``len(records)`` entries raises
    :class:`HandlerContractError` (the whole batch fails)."""
    if isinstance(result, (str, bytes, bytearray, Mapping)) or not isinstance(result, Sequence):
        if result is None or not isinstance(result, Iterable):
            raise HandlerContractError(
                f"batch handler returned {_describe(result)} for {len(records)} records; "
                "return a list with one entry per record (its outputs, or an Exception)",
                records[0] if records else None,
            )
        result = list(result)
    if len(result) != len(records):
        raise HandlerContractError(
            f"batch handler returned {len(result)} entries for {len(records)} records; "
            "return one entry per record, in order (its outputs, or an Exception)",
            records[0] if records else None,
        )
    out: list[list[Outbound] | Exception] = []
    for entry, record in zip(result, records, strict=True):
        if isinstance(entry, Exception):
            out.append(entry)
            continue
        try:
            out.append(coerce_outputs(entry, record))
        except HandlerContractError as exc:
            out.append(exc)
    return out
