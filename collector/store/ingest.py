"""The one writer: a task that drains a queue, commits batches, then acknowledges.

Streams hand in :class:`Work` (validated captures + where to send the answer). The writer
takes everything waiting (up to ``batch_max`` captures), runs one ``IngestService.ingest``
call in its own thread (one transaction), and only after the commit sends each stream its
``Ack``. When the store cannot take writes (locked, disk full) nothing is acknowledged: each
stream gets a ``Backoff`` and then its stream is ended with ``UNAVAILABLE`` + ``retry-after-ms``
(so the agent resends everything in flight after the pause); the agent keeps the captures in
its spool.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from collector.domain.scoring import Scorer
from collector.domain.triage import TriagePolicy
from collector.services.ingest import IngestService
from collector.store.base import (
    Heartbeat,
    IngestResult,
    NewCapture,
    QueueItemRow,
    RulesAckRow,
    Store,
    StoreBusy,
)
from proto import vigil_pb2 as pb

__all__ = ["Reply", "Work", "Writer"]

log = logging.getLogger(__name__)

Reply = Callable[[pb.CollectorMessage], None]


@dataclass
class Work:
    captures: list[NewCapture]
    rejected: list[tuple[str, str]]
    reply: Reply
    #: called with (reason, retry_after_ms) when the captures could NOT be stored
    refuse: Callable[[str, int], None] | None = None


@dataclass
class _Batch:
    works: list[Work] = field(default_factory=list)
    heartbeats: list[Heartbeat] = field(default_factory=list)
    acks: list[RulesAckRow] = field(default_factory=list)
    n: int = 0


class Writer:
    """Single writer for the store. ``on_items`` gets the queue items each commit touched."""

    def __init__(
        self,
        store: Store,
        policy: TriagePolicy,
        batch_max: int = 5000,
        queue_max: int = 200_000,
        backoff_ms: int = 5000,
        on_items: Callable[[list[QueueItemRow]], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.time,
        scorer: Scorer | None = None,
    ) -> None:
        self.store = store
        self.policy = policy
        self.service = IngestService(store, policy, scorer)
        self.batch_max = batch_max
        self.queue_max = queue_max
        self.backoff_ms = backoff_ms
        self.on_items = on_items
        self.clock = clock
        self._q: asyncio.Queue[Work | Heartbeat | RulesAckRow | None] = asyncio.Queue()
        self._pending = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vigil-writer")
        self._side_tasks: set[asyncio.Task[None]] = set()
        self.stats = {"batches": 0, "stored": 0, "redelivered": 0, "busy": 0, "errors": 0}

    @property
    def pending(self) -> int:
        return self._pending

    def submit(self, work: Work) -> bool:
        """Queue captures for the next commit; False = overloaded (tell the agent to back off)."""
        if self._pending + len(work.captures) > self.queue_max and self._pending > 0:
            return False
        self._pending += len(work.captures)
        self._q.put_nowait(work)
        return True

    def submit_heartbeat(self, hb: Heartbeat) -> None:
        self._q.put_nowait(hb)

    def submit_rules_ack(self, ack: RulesAckRow) -> None:
        self._q.put_nowait(ack)

    def refuse(self, work: Work, reason: str) -> None:
        """Nothing of ``work`` was stored: tell its agent to back off (and end its stream)."""
        work.reply(self.backoff(reason))
        if work.refuse is not None:
            work.refuse(reason, self.backoff_ms)

    def backoff(self, reason: str) -> pb.CollectorMessage:
        return pb.CollectorMessage(backoff=pb.Backoff(retry_after_ms=self.backoff_ms,
                                                      reason=reason))

    async def run(self) -> None:
        """Drain until :meth:`stop`; everything queued before stop is still written."""
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            first = await self._q.get()
            batch = _Batch()
            item: Work | Heartbeat | RulesAckRow | None = first
            while True:
                if item is None:
                    stopping = True
                elif isinstance(item, Work):
                    batch.works.append(item)
                    batch.n += len(item.captures)
                elif isinstance(item, Heartbeat):
                    batch.heartbeats.append(item)
                else:
                    batch.acks.append(item)
                if batch.n >= self.batch_max or self._q.empty():
                    break
                item = self._q.get_nowait()
            await self._commit(loop, batch)

    async def _commit(self, loop: asyncio.AbstractEventLoop, batch: _Batch) -> None:
        self._pending -= batch.n
        try:
            await self._write(loop, batch)
        except StoreBusy as exc:
            self.stats["busy"] += 1
            log.warning("store busy, %d captures not acknowledged: %s", batch.n, exc)
            for w in batch.works:
                self.refuse(w, "store busy")
        except Exception:
            self.stats["errors"] += 1
            log.exception("writer commit failed for %d captures; retrying stream by stream",
                          batch.n)
            await self._isolate(loop, batch)

    async def _isolate(self, loop: asyncio.AbstractEventLoop, batch: _Batch) -> None:
        """After an unexpected failure, commit each stream's work on its own, so one bad
        message only delays its own agent (which is told to back off), never the others."""
        parts = [_Batch(heartbeats=batch.heartbeats, acks=batch.acks)]
        parts += [_Batch(works=[w], n=len(w.captures)) for w in batch.works]
        for part in parts:
            try:
                await self._write(loop, part)
            except StoreBusy:
                for w in part.works:
                    self.refuse(w, "store busy")
            except Exception as exc:
                log.error("writer: %d captures not stored (%s: %s)", part.n,
                          type(exc).__name__, exc)
                for w in part.works:
                    self.refuse(w, "store error")

    async def _write(self, loop: asyncio.AbstractEventLoop, batch: _Batch) -> None:
        captures = [c for w in batch.works for c in w.captures]
        now = int(self.clock() * 1000)
        result: IngestResult = await loop.run_in_executor(
            self._executor, lambda: self.service.ingest(
                captures, now, batch.heartbeats, batch.acks))
        self.stats["batches"] += 1
        self.stats["stored"] += len(result.stored_ids)
        self.stats["redelivered"] += len(result.existing_ids)
        conflicts = result.conflicts
        for w in batch.works:
            ack = pb.Ack(stored_ids=[c.id for c in w.captures
                                     if not conflicts or (c.id, c.device_id) not in conflicts])
            for cid, reason in w.rejected:
                ack.rejected.add(id=cid, reason=reason)
            if conflicts:
                for c in w.captures:
                    if (c.id, c.device_id) in conflicts:
                        ack.rejected.add(id=c.id, reason="id_conflict")
            w.reply(pb.CollectorMessage(ack=ack))
        if result.items and self.on_items is not None:
            # Alerting (SMTP, webhooks) must never hold up the next commit.
            task = asyncio.create_task(self._alert(result.items))
            self._side_tasks.add(task)
            task.add_done_callback(self._side_tasks.discard)

    async def _alert(self, items: list[QueueItemRow]) -> None:
        assert self.on_items is not None
        try:
            await self.on_items(items)
        except Exception:
            log.exception("alerting failed for %d queue items", len(items))

    async def stop(self) -> None:
        """Ask :meth:`run` to finish after what is queued; see :meth:`wait_side_tasks`."""
        self._q.put_nowait(None)

    async def wait_side_tasks(self, timeout: float = 15.0) -> None:
        if self._side_tasks:
            await asyncio.wait(set(self._side_tasks), timeout=timeout)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
