"""Two collectors on one store behind a real HAProxy (TCP mode, deploy/haproxy.cfg): kill -9
one of them under load, and every agent carries on through the other with nothing lost and
nothing stored twice; a rule publish during the run reaches the agents of both processes.

The agents are AgentClients (real mTLS through HAProxy, so the collector still reads each
device's identity from its own peer certificate) driven like a real agent's uplink: every
capture stays in a "spool" until it is acknowledged, and on a broken stream the agent
reconnects and resends everything unacknowledged. The store is PostgreSQL (a real server,
tests/support/postgres.py) or, for the embedded backend, one SQLite file in the shared data
dir (two processes on one host can share a WAL file).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest

import rules
from collector.config import load_config
from collector.services import rules as rules_admin
from collector.store import open_configured_store
from collector.store.sqlite import SqliteStore
from proto import vigil_pb2 as pb
from tests.support.agent_client import AgentClient, Stream, make_capture
from tests.support.collector import TEST_RULES, RunningCollector, init_data_dir, serve, toml_dumps
from tests.support.haproxy import HAProxy, HAProxyUnavailable, Stats

if TYPE_CHECKING:
    from collector.store.postgres import PostgresStore

log = logging.getLogger(__name__)

_ROOT = Path(__file__).resolve().parents[2]
RULES_V2 = _ROOT / "tests" / "collector" / "rules_v2"
AGENTS = 16
BATCH = 25           # captures per batch; each agent keeps one batch in flight (closed loop)
ROUNDS_BEFORE = 4    # acked batches per agent before the publish and the kill
ROUNDS_AFTER = 4     # ... and after each agent's stream is back
WAIT = 90.0          # failure bound of every wait below (each one waits on an event)


# -- collector processes ------------------------------------------------------------------
def _serve(data_dir: Path, name: str, timeout: float = 60) -> RunningCollector:
    """``vigil-collector serve`` on the shared data dir; returns once it prints ``ready``
    (its gRPC health service is SERVING by then)."""
    return serve(data_dir, data_dir.parent / f"{name}.log", name=name, timeout=timeout)


# -- agents -------------------------------------------------------------------------------
@dataclass(eq=False)
class _Agent:
    """An agent's uplink in miniature: a spool of unacknowledged captures, resent in full on
    every new stream; a new batch only once the previous one is acknowledged."""

    client: AgentClient
    progress: asyncio.Condition
    pending: dict[str, pb.Capture] = field(default_factory=dict)
    sent: set[str] = field(default_factory=set)
    acked: set[str] = field(default_factory=set)
    rejected: dict[str, str] = field(default_factory=dict)
    resent: set[str] = field(default_factory=set)
    rounds: int = 0                  # batches acknowledged
    streams: int = 0                 # streams opened
    broken_at: list[float] = field(default_factory=list)  # monotonic, stream errors
    back_at: list[float] = field(default_factory=list)    # first ack on a later stream
    bundles: dict[int, float] = field(default_factory=dict)  # version -> when received
    bundle_msgs: dict[int, pb.RuleBundle] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def rules_version(self) -> int:
        return max(self.bundles, default=1)

    async def run(self, producing: asyncio.Event) -> None:
        while True:
            try:
                async with self.client.connect() as s:
                    self.streams += 1
                    watcher = asyncio.create_task(self._watch_bundles(s))
                    try:
                        if await self._serve(s, producing):
                            return
                    finally:
                        watcher.cancel()
                        self._harvest(s)
            except (ConnectionError, grpc.aio.AioRpcError, TimeoutError) as exc:
                self.broken_at.append(time.monotonic())
                self.errors.append(f"{type(exc).__name__}: {exc}"[:300])
            # an agent backs off with jitter before it reconnects
            await asyncio.sleep(random.uniform(0.02, 0.1))

    async def _serve(self, s: Stream, producing: asyncio.Event) -> bool:
        """True when done (not producing and nothing unacknowledged)."""
        await s.heartbeat(rules_version=self.rules_version)
        first = True
        if self.pending:  # redelivery: everything the last stream did not acknowledge
            self.resent.update(self.pending)
            await self._send(s, list(self.pending.values()), first)
            first = False
        while producing.is_set():
            batch = [make_capture(severity=3) for _ in range(BATCH)]
            for c in batch:
                self.pending[c.id] = c
                self.sent.add(c.id)
            await self._send(s, batch, first)
            first = False
        return not self.pending

    async def _send(self, s: Stream, batch: list[pb.Capture], first: bool) -> None:
        ids = [c.id for c in batch]
        await s.send_captures(batch)
        await s.wait_for(lambda st: all(i in st.acked or i in st.rejected for i in ids),
                         timeout=WAIT)
        self._harvest(s)
        if first and self.broken_at:
            self.back_at.append(time.monotonic())
        self.rounds += 1
        async with self.progress:
            self.progress.notify_all()

    def _harvest(self, s: Stream) -> None:
        for i in [i for i in self.pending if i in s.acked]:
            del self.pending[i]
            self.acked.add(i)
        for i, why in s.rejected.items():
            if i in self.pending:
                self.rejected[i] = why
                del self.pending[i]

    async def _watch_bundles(self, s: Stream) -> None:
        seen = 0
        while True:
            def more(st: Stream, n: int = seen) -> bool:
                return len(st.bundles) > n
            try:
                await s.wait_for(more, timeout=3600)
            except ConnectionError:
                return  # the stream broke: run() reconnects, and watches the next one
            for b in s.bundles[seen:]:
                self.bundles.setdefault(b.version, time.monotonic())
                self.bundle_msgs.setdefault(b.version, b)
            seen = len(s.bundles)
            async with self.progress:
                self.progress.notify_all()


async def _until(progress: asyncio.Condition, cond: Callable[[], bool], what: str,
                 timeout: float = WAIT) -> None:
    async def wait() -> None:
        async with progress:
            await progress.wait_for(cond)
    try:
        await asyncio.wait_for(wait(), timeout)
    except TimeoutError:
        raise AssertionError(f"not reached in {timeout} s: {what}") from None


# -- the shared store, set up the way `init` and the technician CLI do -----------------------
@contextlib.contextmanager
def _admin_store(data_dir: Path) -> Iterator[SqliteStore | PostgresStore]:
    store = open_configured_store(load_config(None, data_dir))
    try:
        yield store
    finally:
        store.close()


def _prepare(tmp_path: Path, backend: str, request: pytest.FixtureRequest,
             poll_seconds: float) -> Path:
    data_dir = tmp_path / "shared"
    init_data_dir(data_dir, "--rules", str(TEST_RULES), "--no-model")
    cfg: dict[str, dict[str, Any]] = {
        "retention": {"purge_interval_hours": 24.0}, "ingest": {"check_rules": False},
        "server": {"rules_poll_seconds": poll_seconds}}
    if backend == "postgresql":
        cfg["store"] = {"url": request.getfixturevalue("pg_url")}
    (data_dir / "collector.toml").write_text(toml_dumps(cfg))
    if backend == "postgresql":  # what `init` did for the SQLite file, in PostgreSQL
        now = int(time.time() * 1000)
        with _admin_store(data_dir) as store:
            store.ensure_site("default", "Default", now)
            rules_admin.publish(store, data_dir, TEST_RULES, "cli:test", now, model="none")
    return data_dir


def _token(data_dir: Path, uses: int) -> str:
    now = int(time.time() * 1000)
    with _admin_store(data_dir) as store:
        store.ensure_group("default", "secondary", "secondary")
        _, secret = store.create_token("default", "secondary", uses, now + 86_400_000,
                                       "cli:test", now)
    return secret


def _publish_v2(data_dir: Path) -> int:
    with _admin_store(data_dir) as store:
        p = rules_admin.publish(store, data_dir, RULES_V2, "cli:test",
                                int(time.time() * 1000), model="none")
    return p.version.version


def _stored(data_dir: Path) -> tuple[dict[str, int], dict[str, int]]:
    """How many rows each capture id has, and when (ms) each was first received."""
    with _admin_store(data_dir) as store:
        rows = store.db.rows("SELECT id, COUNT(*) AS n, MIN(received_at) AS t FROM captures "
                             "GROUP BY id")
    return {str(r["id"]): int(r["n"]) for r in rows}, {str(r["id"]): int(r["t"]) for r in rows}


# -- the test -----------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
async def test_kill_one_collector_under_load_nothing_lost_nothing_duplicated(
        tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> None:
    # SQLite has only the poll. On PostgreSQL the poll is an hour apart, so a publish that
    # arrives in seconds can only have come through LISTEN/NOTIFY.
    data_dir = _prepare(tmp_path, backend, request, 0.2 if backend == "sqlite" else 3600.0)
    collectors: list[RunningCollector] = []
    lb: HAProxy | None = None
    agents: list[_Agent] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        collectors = [_serve(data_dir, "c1"), _serve(data_dir, "c2")]
        try:
            lb = HAProxy.start([(c.stream_addr, c.enrol_addr) for c in collectors],
                               tmp_path / "haproxy")
        except HAProxyUnavailable as exc:
            pytest.skip(str(exc))
        # Both collectors are ready; wait until HAProxy has checked each of them.
        await asyncio.to_thread(lb.wait_until, lambda s: all(
            x.checked_up for b in ("vigil_stream", "vigil_enrol") for x in s.backend(b)))

        ca = (data_dir / "pki" / "ca.pem").read_bytes()
        token = _token(data_dir, AGENTS)
        progress = asyncio.Condition()
        for n in range(AGENTS):
            client = AgentClient(lb.enrol_addr, lb.stream_addr, ca, hostname=f"pc-{n}")
            await client.enrol(token)  # through HAProxy too
            agents.append(_Agent(client, progress))
        producing = asyncio.Event()
        producing.set()
        tasks = [asyncio.create_task(a.run(producing)) for a in agents]
        await _until(progress, lambda: all(a.rounds >= ROUNDS_BEFORE for a in agents),
                     f"every agent has {ROUNDS_BEFORE} batches acknowledged")
        # leastconn spreads the streams over both collectors
        before: Stats = lb.servers()
        per_server = {x.name: x.current_sessions for x in before.backend("vigil_stream")}
        assert all(n > 0 for n in per_server.values()) and sum(per_server.values()) == AGENTS, \
            per_server

        # A rule publish (another process: the technician's) reaches the agents of both.
        t_publish = time.monotonic()
        version = await asyncio.to_thread(_publish_v2, data_dir)
        await _until(progress, lambda: all(version in a.bundles for a in agents),
                     f"every agent received rules version {version}")
        fanout_s = max(a.bundles[version] for a in agents) - t_publish
        bundle = agents[0].client.enrolment
        assert bundle is not None

        # kill -9 one collector while every agent has a batch in flight
        victim, survivor = collectors
        broken_before = {id(a): len(a.broken_at) for a in agents}
        rounds_at_kill = {id(a): a.rounds for a in agents}
        t_kill, kill_ms = time.monotonic(), int(time.time() * 1000)
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(30)
        await asyncio.to_thread(lb.wait_until, lambda s: s.server(
            "vigil_stream", victim.name).status.startswith("DOWN"))
        t_down = time.monotonic() - t_kill
        moved = [a for a in agents if len(a.broken_at) > broken_before[id(a)]]
        stayed = [a for a in agents if a not in moved]
        # every agent of the dead collector lost its stream, and only those
        assert len(moved) == per_server[victim.name], (len(moved), per_server)
        # ... and carries on through HAProxy to the survivor
        await _until(progress, lambda: all(a.rounds >= rounds_at_kill[id(a)] + ROUNDS_AFTER
                                           for a in agents),
                     f"every agent has {ROUNDS_AFTER} more batches acknowledged")
        reconnect_s = [a.back_at[-1] - t_kill for a in moved]
        after = lb.servers()
        assert after.server("vigil_stream", survivor.name).current_sessions == AGENTS
        # the rules publish had reached agents on both processes
        assert moved and stayed

        # stop producing; every agent drains its spool, then the store is read
        producing.clear()
        await asyncio.wait_for(asyncio.gather(*tasks), WAIT)
        stored, received_at = await asyncio.to_thread(_stored, data_dir)
        sent = set().union(*(a.sent for a in agents))
        resent = set().union(*(a.resent for a in agents))
        # stored by the dead collector, whose ack never arrived: redelivered and acked again
        ack_lost = {i for i in resent if received_at.get(i, kill_ms) < kill_ms}
        acked = set().union(*(a.acked for a in agents))
        rejected = {i: w for a in agents for i, w in a.rejected.items()}
        duplicated = {i: n for i, n in stored.items() if n > 1}
        summary = (f"{backend}: {len(sent)} captures sent, {len(stored)} stored, "
                   f"{len(duplicated)} stored twice, {len(acked)} acked, "
                   f"{len(resent)} resent after the kill ({len(ack_lost)} of them had been "
                   f"stored by the dead collector, ack lost); "
                   f"{len(moved)}/{AGENTS} agents moved, reconnected in "
                   f"median {statistics.median(reconnect_s):.3f} s, max "
                   f"{max(reconnect_s):.3f} s; HAProxy marked the dead one down after "
                   f"{t_down:.3f} s; rules v{version} reached all {AGENTS} agents in "
                   f"{fanout_s:.3f} s")
        print(summary)
        log.warning(summary)
        assert not rejected, rejected
        assert not duplicated, duplicated
        assert set(stored) == sent       # nothing lost, nothing invented
        assert acked == sent             # every stored capture was acknowledged
        assert not any(a.pending for a in agents)
        for a in agents:  # each one got the signed bundle itself, not just a version number
            _, info = rules.load_bundle(a.bundle_msgs[version].bundle,
                                        bundle.rules_public_key_pem)
            assert info.version == version
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if lb is not None:
            lb.stop()
        for c in collectors:
            c.stop()
        for c in collectors:
            if c.proc.returncode not in (0, -signal.SIGKILL):
                print(f"--- {c.name} log ---\n{c.log()[-6000:]}")



@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
async def test_a_revocation_reaches_the_process_that_holds_the_stream(
        tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> None:
    """Two collectors on one store, one agent streaming to each; the technician revokes both
    devices in the store; each collector ends the stream it holds, and refuses a reconnect."""
    data_dir = _prepare(tmp_path, backend, request, 0.2)
    collectors: list[RunningCollector] = []
    try:
        collectors = [_serve(data_dir, "c1"), _serve(data_dir, "c2")]
        ca = (data_dir / "pki" / "ca.pem").read_bytes()
        token = _token(data_dir, 2)
        clients = [AgentClient(collectors[0].enrol_addr, c.stream_addr, ca) for c in collectors]
        for client in clients:
            await client.enrol(token)
        async with clients[0].connect() as s1, clients[1].connect() as s2:
            for s in (s1, s2):
                await s.heartbeat(rules_version=1)
                await s.wait_for(lambda st: st.configs)
            now = int(time.time() * 1000)
            with _admin_store(data_dir) as store:
                for client in clients:
                    assert store.revoke_device(client.device_id, now)
            for s in (s1, s2):
                with pytest.raises(ConnectionError):
                    await s.wait_for(lambda st: False, timeout=WAIT)
                assert s.error is not None
                assert s.error.code() == grpc.StatusCode.PERMISSION_DENIED
        async with clients[1].connect() as again:
            await again.heartbeat(rules_version=1)
            with pytest.raises(ConnectionError):
                await again.wait_for(lambda st: False, timeout=WAIT)
            assert again.error is not None
            assert again.error.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        for c in collectors:
            c.stop()
