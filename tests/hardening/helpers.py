"""Helpers shared by the hardening tests (real collector, real clients, condition polling)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import grpc

from tests.support.agent_client import AgentClient, Stream
from tests.support.collector import RunningCollector

T = TypeVar("T")
RULES_V1 = Path(__file__).resolve().parents[1] / "collector" / "rules_v1"
RULES_V2 = Path(__file__).resolve().parents[1] / "collector" / "rules_v2"


def client(c: RunningCollector, hostname: str = "pc-test") -> AgentClient:
    return AgentClient(c.enrol_addr, c.stream_addr, c.ca_pem, hostname)


async def enrolled(c: RunningCollector, group: str = "secondary",
                   hostname: str = "pc-test") -> AgentClient:
    a = client(c, hostname)
    await a.enrol(c.create_token(group=group))
    return a


async def refusal(s: Stream) -> grpc.StatusCode:
    """Use a stream the collector should refuse; return the status code it ended with."""
    try:
        await s.heartbeat()
        await s.wait_for(lambda s: s.messages)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    except ConnectionError:
        assert s.error is not None
        return s.error.code()
    raise AssertionError(f"stream was not refused: {s.messages}")


async def poll(cond: Callable[[], T], timeout: float = 30.0, what: str = "condition") -> T:
    """Await until ``cond()`` is truthy (returns it); never a bare sleep as synchronisation."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = cond()
        if value:
            return value
        if loop.time() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)
