"""asyncio helpers the agent's loops share."""

from __future__ import annotations

import asyncio

__all__ = ["wait_event"]


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait up to *timeout* seconds for *event*; True if it was set.

    Use this, not ``asyncio.wait_for(event.wait(), timeout)``: on Python 3.11 ``wait_for``
    can swallow a cancellation that arrives as the inner wait completes (bpo-42130, fixed in
    3.12), and a loop that cannot be cancelled hung the uplink after a network drop.
    ``asyncio.timeout`` only converts its own cancellation into ``TimeoutError``.
    """
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True
