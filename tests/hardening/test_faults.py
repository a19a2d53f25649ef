"""Faults: nothing lost, nothing duplicated. Real collector processes killed with SIGKILL, the
real agent killed mid-batch, outages, a full spool, a locked store, a half-open connection.

Sizes scale with environment variables (see docs/security.md for the values used in CI):
``VIGIL_HARDENING_LOAD`` (captures in the collector-kill test, default 100000) and
``VIGIL_HARDENING_SPOOL`` (captures accumulated during an outage, default 50000).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from agent.config import Config
from agent.enrol import enroll
from agent.paths import DataDir
from agent.spool import Spool
from proto import vigil_pb2 as pb
from tests.support.agent import AgentProcess, InProcessAgent, no_backends, spool_captures
from tests.support.agent_client import AgentClient, Stream, make_capture
from tests.support.collector import RunningCollector, start_collector, toml_dumps

from .helpers import RULES_V1, Proxy, client, poll

LOAD = int(os.environ.get("VIGIL_HARDENING_LOAD", "100000"))
SPOOLED = int(os.environ.get("VIGIL_HARDENING_SPOOL", "50000"))


class LoadClient:
    """An agent-like client that behaves like the real uplink: resend everything unacked on a
    new stream after any failure, with a bounded number of batches in flight.

    The first half of its captures is sent at once; the second half once ``gate`` opens.
    ``progress`` is called after every batch (the test uses it to pull the trigger while
    batches are in flight)."""

    def __init__(self, ac: AgentClient, captures: list[pb.Capture],
                 progress: Callable[[], None]) -> None:
        self.ac = ac
        half = len(captures) // 2
        self.todo = {c.id: c for c in captures[:half]}
        self.later = {c.id: c for c in captures[half:]}
        self.progress = progress
        self.streams: list[Stream] = []
        self.sessions = 0

    @property
    def acked(self) -> set[str]:
        return set().union(*(s.acked for s in self.streams))

    async def run(self, address: list[str], deadline: float, gate: asyncio.Event) -> None:
        while (self.todo or self.later) and time.monotonic() < deadline:
            if gate.is_set() and self.later:
                self.todo.update(self.later)
                self.later = {}
            if not self.todo:
                await gate.wait()
                continue
            self.ac.stream_addr = address[0]
            self.sessions += 1
            try:
                async with self.ac.connect() as s:
                    self.streams.append(s)
                    try:
                        await s.heartbeat()
                        await self._session(s)
                    finally:
                        for i in s.acked & self.todo.keys():
                            del self.todo[i]
            except (grpc.aio.AioRpcError, ConnectionError, TimeoutError, OSError,
                    asyncio.InvalidStateError):  # writing to a stream that just died
                await asyncio.sleep(0.2)  # reconnect back-off (pacing, not synchronisation)

    async def _session(self, s: Stream) -> None:
        ids = list(self.todo)
        batches = [ids[i:i + 250] for i in range(0, len(ids), 250)]
        for n, batch in enumerate(batches):
            await s.send_captures([self.todo[i] for i in batch])
            self.progress()
            if n >= 4:
                old = set(batches[n - 4])
                await s.wait_for(lambda st, old=old: old <= st.acked, timeout=30)
        want = set(ids)
        await s.wait_for(lambda st: want <= st.acked, timeout=60)


def _stored_ids(c: RunningCollector) -> list[str]:
    return [r[0] for r in c.query("SELECT id FROM captures")]


async def test_collector_sigkill_under_load_stores_every_capture_exactly_once(
        tmp_path: Path) -> None:
    c = start_collector(tmp_path)
    clients: list[LoadClient] = []
    total = (LOAD // 4) * 4
    killed = asyncio.Event()

    def progress() -> None:
        # SIGKILL from inside the load, the moment a fifth of it is acknowledged: the first
        # half is still streaming, with batches in flight, on every client
        if not killed.is_set() and sum(len(s.acked) for lc in clients
                                       for s in lc.streams) >= total // 5:
            c.proc.send_signal(signal.SIGKILL)
            killed.set()

    try:
        for k in range(4):
            ac = client(c, f"pc-load-{k}")
            await ac.enrol(c.create_token())
            caps = [make_capture(f"k{k}-{i:06d}", severity=1 + i % 5, rule_id=f"load.r{i % 7}",
                                 os_user=f"pupil{i % 50}") for i in range(total // 4)]
            clients.append(LoadClient(ac, caps, progress))
        address = [c.stream_addr]
        deadline = time.monotonic() + 240
        gate = asyncio.Event()  # the second half of the load starts after the restart
        runs = asyncio.gather(*(lc.run(address, deadline, gate) for lc in clients))
        await poll(lambda: killed.is_set() or runs.done(), timeout=120, what="the kill")
        assert killed.is_set(), "the load finished before the kill"
        await asyncio.to_thread(c.proc.wait, 30)
        await poll(lambda: all(s.closed.is_set() for lc in clients for s in lc.streams),
                   what="every stream to notice the collector is gone")
        acked_at_kill = set().union(*(lc.acked for lc in clients))
        # nothing was acknowledged that was not durably stored
        stored_after_kill = set(_stored_ids(c))
        assert acked_at_kill <= stored_after_kill, len(acked_at_kill - stored_after_kill)
        assert len(acked_at_kill) < total // 2  # really killed mid-load
        c.stop()
        c = start_collector(tmp_path)  # same data dir; `init` is idempotent
        address[0] = c.stream_addr
        gate.set()
        await runs
        ids = _stored_ids(c)
        want = {cap_id for lc in clients for cap_id in lc.acked}
        assert all(not lc.todo for lc in clients), [len(lc.todo) for lc in clients]
        assert len(ids) == len(set(ids)) == total
        assert set(ids) == want
        # redelivery after the crash never double-counted a capture in the DSL queue
        assert c.query("SELECT SUM(count) FROM queue_items")[0][0] + c.query(
            "SELECT COUNT(*) FROM captures WHERE queue_item_id IS NULL")[0][0] == total
        assert sum(lc.sessions for lc in clients) > 4  # they had to reconnect and resend
        assert c.query("PRAGMA integrity_check") == [("ok",)]
    finally:
        c.stop()


def _agent_config(tmp_path: Path, **values: object) -> Path:
    base: dict[str, object] = {"rules_library": str(RULES_V1), "watch_keys": False,
                               "watch_window": False, "watch_media": False,
                               "backoff_initial_seconds": 0.2, "backoff_max_seconds": 2.0}
    base.update(values)
    path = tmp_path / "agent.toml"
    path.write_text(toml_dumps({"agent": base}))  # type: ignore[dict-item]
    return path


def _fill_spool(data: DataDir, captures: list[pb.Capture], max_bytes: int = 1 << 30) -> None:
    spool = Spool(data.spool, max_bytes)
    try:
        for cap in captures:
            assert spool.put(cap)
    finally:
        spool.close()


async def _enrolled_data_dir(c: RunningCollector, root: Path, collector_addr: str) -> DataDir:
    data = DataDir(root).ensure()
    await asyncio.to_thread(enroll, data, c.enrol_addr, c.create_token(), c.ca_path,
                            collector_addr)
    return data


async def test_agent_sigkill_mid_batch_then_restart_delivers_exactly_once(
        tmp_path: Path) -> None:
    c = start_collector(tmp_path)
    try:
        data = await _enrolled_data_dir(c, tmp_path / "agent", c.stream_addr)
        n = 5000
        caps = [make_capture(f"a-{i:05d}", severity=1 + i % 5, rule_id=f"kill.r{i % 5}")
                for i in range(n)]
        _fill_spool(data, caps)
        cfg = _agent_config(tmp_path, batch_size=50)
        proc = AgentProcess(data.root, config_file=cfg).start()
        try:
            await poll(lambda: c.query("SELECT COUNT(*) FROM captures")[0][0] > 0,
                       what="the first batches stored")
            proc.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
            proc.proc.wait(30)  # type: ignore[union-attr]
        finally:
            proc.stop()
        stored = set(_stored_ids(c))
        left = {cap.id for cap in spool_captures(data.root)}
        assert stored | left == {cap.id for cap in caps}  # nothing lost by the kill
        assert left, "the agent finished before it was killed: make n larger"
        proc2 = AgentProcess(data.root, config_file=cfg).start()
        try:
            await poll(lambda: not spool_captures(data.root), timeout=120,
                       what="the spool to drain after the restart")
        finally:
            proc2.stop()
        ids = _stored_ids(c)
        assert len(ids) == len(set(ids)) == n and set(ids) == {cap.id for cap in caps}
        assert c.query("SELECT SUM(count) FROM queue_items")[0][0] + c.query(
            "SELECT COUNT(*) FROM captures WHERE queue_item_id IS NULL")[0][0] == n
    finally:
        c.stop()


def _disk_use(data: DataDir) -> int:
    return sum(p.stat().st_size for p in data.root.glob("spool.sqlite3*"))


async def test_outage_accumulates_in_the_spool_then_delivers_in_order_within_bound(
        tmp_path: Path) -> None:
    c = start_collector(tmp_path)
    proxy = Proxy(c.stream_addr).start()
    proxy.mode = "refuse"  # the collector is unreachable
    try:
        data = await _enrolled_data_dir(c, tmp_path / "agent", proxy.address)
        bound = 16 * 1024 * 1024
        config = Config(rules_library=str(RULES_V1), watch_keys=False, watch_window=False,
                        watch_media=False, spool_max_bytes=bound, backoff_initial_seconds=0.2,
                        backoff_max_seconds=1.0, batch_size=500)
        t0 = int(time.time() * 1000)
        caps = [make_capture(f"o-{i:06d}", severity=3, time_ms=t0 + i, rule_id="outage.r1",
                             context=f"outage context {i}")
                for i in range(SPOOLED)]
        peak = 0
        async with InProcessAgent(data, config, backends=no_backends()) as agent:
            spool = agent.runtime.spool

            def put_all() -> int:
                top = 0
                for i, cap in enumerate(caps):
                    assert spool.put(cap)
                    if i % 1000 == 0:
                        top = max(top, _disk_use(data))
                return top

            peak = await asyncio.to_thread(put_all)
            assert spool.stats().depth == SPOOLED
            assert proxy.accepted >= 1 and c.query("SELECT COUNT(*) FROM captures") == [(0,)]
            peak = max(peak, _disk_use(data))
            proxy.mode = "forward"  # the network comes back
            await agent.wait_for(lambda: spool.stats().depth == 0, timeout=120,
                                 what="the spool to drain")
        assert peak <= bound, f"spool used {peak} bytes on disk, bound {bound}"
        rows = c.query("SELECT id, time_ms FROM captures WHERE device_id = ? ORDER BY rowid",
                       (data_device_id(data),))
        assert [r[0] for r in rows] == [cap.id for cap in caps]  # all, once, in order
    finally:
        proxy.stop()
        c.stop()


def data_device_id(data: DataDir) -> str:
    return str(json.loads(data.device_json.read_text())["device_id"])


async def test_full_spool_drops_lowest_severity_first_and_reports_drops(
        tmp_path: Path) -> None:
    c = start_collector(tmp_path)
    try:
        data = await _enrolled_data_dir(c, tmp_path / "agent", c.stream_addr)
        bound = 64 * 1024
        spool = Spool(data.spool, bound)
        put = [make_capture(f"f-{i:04d}", severity=1 + i % 5, context="z" * 300)
               for i in range(600)]
        try:
            for cap in put:
                spool.put(cap)
            kept = spool.all()
            drops = spool.stats().drops
        finally:
            spool.close()
        by_sev = {s: sum(1 for k in kept if k.severity == s) for s in range(1, 6)}
        assert by_sev[4] == by_sev[5] == 120, by_sev  # severity 4-5 never dropped
        # lowest first: a severity is only dropped from once every lower one is gone
        dropped = {s: 120 - by_sev[s] for s in range(1, 6)}
        for s in (2, 3):
            if dropped[s]:
                assert by_sev[s - 1] == 0, by_sev
        # every drop counted by reason ("over_bound" counts severity 4-5 kept past the bound)
        assert sum(dropped.values()) == drops["spool_full"] > 0, (dropped, drops)
        config = Config(rules_library=str(RULES_V1), watch_keys=False, watch_window=False,
                        watch_media=False, spool_max_bytes=bound, heartbeat_seconds=1)
        async with InProcessAgent(data, config, backends=no_backends()) as agent:
            await agent.wait_for(lambda: agent.runtime.spool.stats().depth == 0, timeout=60)
        dev = data_device_id(data)
        reported = await poll(lambda: json.loads(c.query(
            "SELECT drops FROM devices WHERE id = ?", (dev,))[0][0]) or None,
            what="drop counts in the devices table")
        assert reported == drops
        assert str(drops["spool_full"]) in c.cli("devices").stdout
        # the console's device-health page shows them too
        from starlette.testclient import TestClient

        from collector.console import create_app
        from tests.console.conftest import login
        from tests.console.support import connect, user

        with connect(c.db_path) as conn:
            user(conn, "techdrops", "technician", ["default"])
        app = create_app(c.db_path, c.data_dir, public_url="https://testserver",
                         allowed_hosts=["testserver"])
        with TestClient(app, base_url="https://testserver") as tc:
            assert login(tc, "techdrops").status_code == 303
            page = tc.get("/devices").text
        assert "spool_full" in page or f">{drops['spool_full']}<" in page, \
            "drop counts are not on the device-health page"
    finally:
        c.stop()


@pytest.fixture(params=["locked", "disk_full"])
def store_fault(request: pytest.FixtureRequest, tmp_path: Path) -> object:
    return request.param


async def test_store_locked_or_disk_full_means_backoff_no_ack_then_recovery(
        tmp_path: Path, store_fault: str) -> None:
    import subprocess

    root = tmp_path
    init_args: tuple[str, ...] = ()
    if store_fault == "disk_full":
        # init copies the scorer artefact (~23 MB) into the data dir, which can never fit
        # the 8 MiB tmpfs (init refuses with a clear ENOSPC error); the fault under test is
        # the store filling up while serving, so this collector publishes no model.
        init_args = ("--no-model",)
        if os.geteuid() != 0:
            pytest.skip("mounting tmpfs needs root")
        root = tmp_path / "small"
        root.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(root)],
                       check=True)
    c = None
    try:
        c = start_collector(root, {"ingest": {"busy_timeout_ms": 200, "backoff_ms": 500}},
                            init_args=init_args)
        data = await _enrolled_data_dir(c, tmp_path / "agent", c.stream_addr)
        config = Config(rules_library=str(RULES_V1), watch_keys=False, watch_window=False,
                        watch_media=False, heartbeat_seconds=1)
        caps = [make_capture(f"s-{i:03d}", severity=1 + i % 5, context="q" * 400)
                for i in range(200)]
        async with InProcessAgent(data, config, backends=no_backends()) as agent:
            up = agent.runtime.uplink
            assert up is not None
            await agent.wait_for(lambda: up.connected, what="the stream")
            lock: sqlite3.Connection | None = None
            filler = root / "filler"
            if store_fault == "locked":
                lock = sqlite3.connect(c.db_path, timeout=10, isolation_level=None)
                lock.execute("BEGIN EXCLUSIVE")
            else:
                with open(filler, "wb") as f, contextlib.suppress(OSError):
                    while True:
                        f.write(b"\0" * 65536)
                        f.flush()
            try:
                for cap in caps:
                    agent.runtime.spool.put(cap)
                await agent.wait_for(lambda: "store busy" in c.log() or "store error"
                                     in c.log(), what="the collector to refuse the commit")
                await agent.wait_for(lambda: "UNAVAILABLE" in up.last_error
                                     or up._paused_until > 0, what="the agent backing off")
                # nothing acknowledged that was not stored: all still in the spool
                assert agent.runtime.spool.stats().depth == len(caps)
            finally:
                if lock is not None:
                    lock.execute("ROLLBACK")
                    lock.close()
                filler.unlink(missing_ok=True)
            await agent.wait_for(lambda: agent.runtime.spool.stats().depth == 0, timeout=90,
                                 what="delivery after recovery")
        ids = _stored_ids(c)
        assert sorted(ids) == sorted(cap.id for cap in caps)
        assert c.proc.poll() is None
    finally:
        if c is not None:
            c.stop()
        if store_fault == "disk_full":
            subprocess.run(["umount", "-l", str(root)], check=False)


async def test_half_open_connection_is_detected_by_keepalive_and_agent_reconnects(
        tmp_path: Path) -> None:
    from agent import uplink as uplink_module
    from proto.identity import KEEPALIVE_OPTIONS

    c = start_collector(tmp_path)
    proxy = Proxy(c.stream_addr).start()
    try:
        data = await _enrolled_data_dir(c, tmp_path / "agent", proxy.address)
        # the agent's own channel options, with only the ping interval shortened to 11 s (the
        # server allows >= 10 s); the shipped keepalive timeout (10 s) must be what applies
        shipped = getattr(uplink_module, "CHANNEL_OPTIONS", KEEPALIVE_OPTIONS)
        opts = [(k, v) for k, v in shipped if k != "grpc.keepalive_time_ms"]
        opts.append(("grpc.keepalive_time_ms", 11_000))
        creds = grpc.ssl_channel_credentials(
            root_certificates=data.ca_cert.read_bytes(),
            private_key=data.device_key.read_bytes(),
            certificate_chain=data.device_cert.read_bytes())

        def factory() -> grpc.aio.Channel:
            return grpc.aio.secure_channel(proxy.address, creds, options=opts)

        config = Config(rules_library=str(RULES_V1), watch_keys=False, watch_window=False,
                        watch_media=False, heartbeat_seconds=3600,
                        backoff_initial_seconds=0.2, backoff_max_seconds=1.0)
        async with InProcessAgent(data, config, backends=no_backends(),
                                  channel_factory=factory) as agent:
            up = agent.runtime.uplink
            assert up is not None
            first = make_capture("h-first")
            agent.runtime.spool.put(first)
            await agent.wait_for(lambda: not spool_captures(data.root), what="first delivery")
            sessions = up.sessions
            proxy.blackhole_existing()  # the path dies silently: no FIN, no RST
            second = make_capture("h-second", severity=5)
            agent.runtime.spool.put(second)
            # 11 s ping + 10 s keepalive timeout = ~21 s; 50 s leaves room for a slow machine
            # but fails if the 10 s timeout is not honoured (gRPC's 60 s ping timeout applies)
            await agent.wait_for(lambda: up.sessions > sessions, timeout=50,
                                 what="keepalive to notice the dead path and reconnect")
            await agent.wait_for(lambda: not spool_captures(data.root), timeout=60,
                                 what="the second capture delivered on the new stream")
        assert set(_stored_ids(c)) == {"h-first", "h-second"}
    finally:
        proxy.stop()
        c.stop()


async def test_network_drop_mid_stream_reconnects_and_resends_in_flight(tmp_path: Path) -> None:
    c = start_collector(tmp_path)
    proxy = Proxy(c.stream_addr).start()
    try:
        data = await _enrolled_data_dir(c, tmp_path / "agent", proxy.address)
        config = Config(rules_library=str(RULES_V1), watch_keys=False, watch_window=False,
                        watch_media=False, backoff_initial_seconds=0.2,
                        backoff_max_seconds=1.0, batch_size=50)
        caps = [make_capture(f"n-{i:05d}", severity=1 + i % 5) for i in range(3000)]
        async with InProcessAgent(data, config, backends=no_backends()) as agent:
            up = agent.runtime.uplink
            assert up is not None
            # the proxy resets the connection three times in the middle of the upload
            start = len(proxy.upstream_bytes)
            proxy.cut_at = [start + 60_000, start + 180_000, start + 300_000]
            await asyncio.to_thread(lambda: [agent.runtime.spool.put(x) for x in caps])
            try:
                await agent.wait_for(lambda: agent.runtime.spool.stats().depth == 0,
                                     timeout=60, what="delivery after the drops")
            except TimeoutError:
                raise AssertionError(
                    f"stalled: depth {agent.runtime.spool.stats().depth}, cuts {proxy.cuts}, "
                    f"sessions {up.sessions}, connected {up.connected}, inflight "
                    f"{len(up._inflight)}, last error {up.last_error!r}, stored "
                    f"{c.query('SELECT COUNT(*) FROM captures')[0][0]}") from None
            assert proxy.cuts == 3 and up.sessions >= 4
        ids = _stored_ids(c)
        assert len(ids) == len(set(ids)) == len(caps) and set(ids) == {x.id for x in caps}
    finally:
        proxy.stop()
        c.stop()
