"""The handler contract, checked where it can be.

A handler takes one :class:`~offsetledger.core.Record` and returns the
:class:`~offsetledger.core.Outbound` messages to produce for it: a list (or any
other iterable) of ``Outbound``, empty to produce nothing. Two checks enforce it:

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
from collections.abc import Iterable, Mapping
from typing import Any

from offsetledger.core import OffsetLedgerError, Outbound, Record

__all__ = ["HandlerContractError", "check_handler", "coerce_outputs"]


class HandlerContractError(OffsetLedgerError, TypeError):
    """A handler broke its contract: it is async, or it returned something that is not
    an iterable of :class:`~offsetledger.core.Outbound`. ``record`` is the record it
    was called with (None when the handler was refused at construction)."""

    def __init__(self, message: str, record: Record | None = None) -> None:
        super().__init__(message)
        self.record = record


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


def check_handler(handler: object, *, name: str = "handler") -> None:
    """Refuse what cannot be a handler: not callable, or ``async``.

    Raises :class:`HandlerContractError` with a message saying what to do."""
    if not callable(handler):
        raise HandlerContractError(
            f"{name} must be callable (record -> list[Outbound]), got {type(handler).__name__}"
        )
    if _is_async(handler):
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
