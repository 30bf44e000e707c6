"""A chaos worker whose handler is ``async def`` (awaits 1-20 ms per record).

``offsetledger.chaos`` starts its workers as ``python -m offsetledger.chaos worker
...`` with a fixed sync handler; this module is started in its place (see
``test_async_chaos.py``) with the same arguments and hands over to the harness's
own entry point, its ``run_worker`` given ``make_handler`` (the async handler), so
signals, progress files, the Processor's configuration and the driver's checks are
the harness's."""

from __future__ import annotations

import asyncio
import functools
import os
import random
import sys
from collections.abc import Awaitable, Callable

from offsetledger import chaos
from offsetledger.core import Outbound, Record


def make_async_handler(output_topic: str) -> Callable[[Record], Awaitable[list[Outbound]]]:
    """Each record awaits a uniform 1-20 ms, then becomes the harness's one output."""
    rng = random.Random(f"async-chaos-{os.getpid()}")

    async def handler(record: Record) -> list[Outbound]:
        await asyncio.sleep(rng.uniform(0.001, 0.020))
        return [
            Outbound(
                output_topic, key=record.key, value=chaos._OUTPUT_PREFIX + (record.value or b"")
            )
        ]

    return handler


if __name__ == "__main__":
    chaos.run_worker = functools.partial(chaos.run_worker, make_handler=make_async_handler)
    sys.exit(chaos.main(sys.argv[1:]))
