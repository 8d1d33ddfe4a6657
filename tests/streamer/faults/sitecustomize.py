"""Fault injection for worker processes started by the resilience tests.

A test puts this directory on the worker's ``PYTHONPATH``; Python then runs
this module at start-up.  Without the ``MGTEST_*`` variables it does nothing.

* ``MGTEST_DROP=PARTITION:OFFSET`` makes the worker's consumer lose that
  uploads event once, after fetching it, the way faust-streaming drops events
  (it is never delivered to an actor).  A line on stderr says when it happened.
* ``MGTEST_DELAY_SECONDS=S`` makes every upload take ``S`` seconds longer, so
  a backlog builds up in the worker's queue.
"""

from __future__ import annotations

import os
import sys

if os.environ.get("MGTEST_DROP") or os.environ.get("MGTEST_DELAY_SECONDS"):
    import asyncio
    from collections.abc import AsyncIterator
    from typing import Any

    from streamer import offsets, worker

    if os.environ.get("MGTEST_DROP"):
        _partition, _offset = (int(part) for part in os.environ["MGTEST_DROP"].split(":"))
        _to_drop = [(_partition, _offset)]
        _getmany = offsets.UploadsConsumer.getmany

        async def _dropping_getmany(self: Any, timeout: float) -> AsyncIterator[Any]:
            async for tp, message in _getmany(self, timeout):
                if tp.topic == self.uploads_topic and (tp.partition, message.offset) in _to_drop:
                    _to_drop.clear()
                    note = f"MGTEST dropped partition {tp.partition} offset {message.offset}"
                    print(note, file=sys.stderr, flush=True)
                    continue
                yield tp, message

        offsets.UploadsConsumer.getmany = _dropping_getmany  # type: ignore[method-assign]

    if os.environ.get("MGTEST_DELAY_SECONDS"):
        _delay = float(os.environ["MGTEST_DELAY_SECONDS"])
        _handle_upload = worker.MotionGuardWorker.handle_upload

        async def _slow_handle_upload(self: Any, key: Any, value: Any) -> Any:
            await asyncio.sleep(_delay)
            return await _handle_upload(self, key, value)

        worker.MotionGuardWorker.handle_upload = _slow_handle_upload  # type: ignore[method-assign]
