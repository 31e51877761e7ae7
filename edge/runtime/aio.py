"""Cancellation that cannot get lost: the agent is stopped (SIGTERM, ``run_until_signal``) by cancelling the task
that runs ``Agent.run()``, which cancels its child tasks and waits for them. One child that goes on after its
cancellation keeps the agent from ever stopping.

``asyncio.wait_for`` before Python 3.12 does exactly that now and then: when the awaited thing completes in the
same loop iteration as the cancellation, it returns the result and drops the cancellation (CPython gh-86296). A
``while True`` around it then runs for ever. Hence:

* ``wait_for`` here is ``asyncio.timeout`` underneath: the agent's own code uses it, never ``asyncio.wait_for``.
* ``raise_if_cancelled`` re-raises a cancellation that a library lost (pymodbus calls ``asyncio.wait_for`` for
  every request; the uplink calls it too, a cheap guard at every turn of its loops): call it after such a call and at
  the top of every loop. A task that was cancelled and did not ``uncancel()`` it (``asyncio.timeout`` does) is
  still ``cancelling()``.
* ``cancel_and_wait`` ends child tasks before their parent ends: no task of the agent outlives it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


async def wait_for(aw: Awaitable[T], seconds: float | None) -> T:
    """``asyncio.wait_for`` that never swallows a cancellation (``TimeoutError`` after ``seconds``)."""
    async with asyncio.timeout(seconds):
        return await aw


def raise_if_cancelled() -> None:
    """Raise ``CancelledError`` if the current task was cancelled and is running on all the same."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def cancel_and_wait(tasks: Iterable[asyncio.Future[Any]]) -> None:
    """Cancel ``tasks`` and wait until every one of them has ended; their exceptions are retrieved, not raised.

    If the caller is cancelled meanwhile, they are cancelled again and still waited for, and the caller's
    cancellation is raised once they have all ended."""
    tasks = list(tasks)
    for t in tasks:
        t.cancel()
    cancelled = False
    pending = [t for t in tasks if not t.done()]
    while pending:
        try:
            await asyncio.wait(pending)
        except asyncio.CancelledError:
            cancelled = True
            for t in pending:
                t.cancel()
        pending = [t for t in pending if not t.done()]
    for t in tasks:
        if not t.cancelled():
            t.exception()  # an error while being stopped: retrieved, so asyncio does not log it as never retrieved
    if cancelled:
        raise asyncio.CancelledError
