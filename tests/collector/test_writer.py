"""The single writer: acks only after commit, back-off on a busy store, poison isolation."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from collector.domain.triage import TriagePolicy
from collector.store.ingest import Work, Writer
from collector.store.sqlite import SqliteStore, open_store
from proto import vigil_pb2 as pb
from tests.collector.store_suite import DAY, T0, cap
from tests.support.agent_client import make_capture
from tests.support.collector import RunningCollector


class PoisonStore(SqliteStore):
    """The real store, except that any batch containing capture 'c-poison' raises a bug."""

    def insert_captures(self, rows: Sequence[tuple[Any, ...]]) -> None:
        if any(r[0] == "c-poison" for r in rows):
            raise RuntimeError("simulated bug on one capture")
        super().insert_captures(rows)


async def test_one_bad_stream_does_not_block_the_others(tmp_path: Path) -> None:
    open_store(tmp_path / "v.db", tmp_path).close()  # migrate
    store = PoisonStore(tmp_path / "v.db", tmp_path)
    store.ensure_site("s1", "S", T0)
    _, secret = store.create_token("s1", "g1", 2, T0 + DAY, "t", T0)
    store.enrol_device(secret, "d-1", "pc", "linux", "1", "01", T0)
    writer = Writer(store, TriagePolicy(timezone="UTC"), backoff_ms=1234)
    replies: dict[str, list[pb.CollectorMessage]] = {"good": [], "bad": []}
    task = asyncio.create_task(writer.run())
    writer.submit(Work([cap(1)], [], replies["good"].append))
    bad = cap(2)
    bad.id = "c-poison"
    writer.submit(Work([bad], [], replies["bad"].append))
    await writer.stop()
    await asyncio.wait_for(task, 20)
    writer.close()
    assert list(replies["good"][0].ack.stored_ids) == ["c1"]
    assert replies["bad"][0].backoff.retry_after_ms == 1234
    assert store.capture_ids_for_item(1) == ["c1"]
    store.close()


async def test_huge_heartbeat_values_are_clamped(collector: RunningCollector) -> None:
    from tests.support.agent_client import AgentClient

    a = AgentClient(collector.enrol_addr, collector.stream_addr, collector.ca_pem)
    await a.enrol(collector.create_token())
    c = make_capture()
    async with a.connect() as s:
        await s.heartbeat(rules_version=2**64 - 1, spool_depth=2**64 - 1,
                          drops={"x": 2**64 - 1})
        await s.send_captures([c])
        await s.wait_for(lambda s: c.id in s.acked)
    assert collector.query("SELECT spool_depth FROM devices WHERE id = ?",
                           (a.device_id,)) == [(2**63 - 1,)]
