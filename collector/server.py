"""``vigil-collector serve``: both gRPC ports, the writer, fan-out, alerts, scheduled purge and
(when ``collector.console`` is installed) the web console, in one asyncio event loop.

One process serves a school on the embedded SQLite store. For a trust, run two or more
identical processes on one PostgreSQL store (``store.url``) behind a TCP load balancer
(docs/deploy.md "Trust deployment"). A process keeps nothing that another one needs: the
store holds every row, and the data dir (shared between them) holds the PKI files, the
rules signing public key, the screenshot files and their key, and the model artefacts. What
each process holds in memory is a cache (the rule catalogue, the active bundle) or its own
streams; a rule publish reaches every process through ``NOTIFY vigil_rules`` and the poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from collector.artefacts import ArtefactStore, FetchLimit
from collector.config import Config
from collector.domain.triage import TriagePolicy
from collector.enrol import EnrollmentService, TokenBucket
from collector.fanout import Hub
from collector.services import retention
from collector.services.alerts import Alerter
from collector.services.rules import RulesFeed, public_key_path
from collector.store import open_configured_store
from collector.store.base import RuleVersion, Store
from collector.store.ingest import Writer
from collector.stream import AgentSettings, CollectorService, lenient
from collector.tls import Pki
from collector.validate import Limits, RuleCatalogue
from proto import vigil_pb2 as pb
from proto.identity import KEEPALIVE_OPTIONS, SERVER_MIN_PING_INTERVAL_MS
from rules import DEFAULT_LIBRARY, load_library
from rules.ruleset import rule_to_dict

if TYPE_CHECKING:
    from collector.store.pg_notify import Listener

__all__ = ["CollectorServer", "ServerError"]

log = logging.getLogger(__name__)


class ServerError(Exception):
    """The server cannot start (the message names the file or address and the fix)."""


class _Runner:
    """Runs blocking store calls on one dedicated thread (the control connection)."""

    def __init__(self, name: str) -> None:
        self._ex = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    def __call__(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().run_in_executor(self._ex, lambda: fn(*args))

    def close(self) -> None:
        self._ex.shutdown(wait=True)


def _split(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    try:
        return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104
    except ValueError:
        raise ServerError(f"listen address {addr!r} must be HOST:PORT") from None


def _grpc_options() -> list[tuple[str, Any]]:
    return [*KEEPALIVE_OPTIONS, ("grpc.so_reuseport", 0),
            ("grpc.http2.min_ping_interval_without_data_ms", SERVER_MIN_PING_INTERVAL_MS)]


class CollectorServer:
    """Start with :meth:`start` (returns the real listener addresses), stop with :meth:`stop`."""

    def __init__(self, cfg: Config, clock: Callable[[], float] = time.time,
                 console: bool = True, scheduled_purge: bool = True) -> None:
        self.cfg, self.clock = cfg, clock
        self.want_console, self.scheduled_purge = console, scheduled_purge
        self.listeners: dict[str, str] = {}
        self._console_store: Any = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._servers: list[grpc.aio.Server] = []
        self._uvicorn: Any = None
        self.listener: Listener | None = None  # PostgreSQL: LISTEN vigil_rules

    async def start(self) -> dict[str, str]:
        cfg = self.cfg
        pki = Pki.in_dir(cfg.data_dir)
        needed = [pki.ca_cert, pki.server_cert, pki.server_key]
        if not cfg.store.url:
            needed.append(cfg.db_path)
        for p in needed:
            if not p.exists():
                raise ServerError(f"{p} is missing; run `vigil-collector init --data-dir "
                                  f"{cfg.data_dir}` first")
        self.store: Store = open_configured_store(cfg)  # migrates (PostgreSQL: advisory lock)
        self.feed = RulesFeed(self.store)
        # SQLite: the writer gets its own connection to the WAL file. PostgreSQL: the store
        # is a thread-safe pool, so the writer's thread borrows from the same one.
        self.wstore: Store = self.store if self.store.backend == "postgresql" else \
            open_configured_store(cfg, migrate=False,
                                  busy_timeout_ms=cfg.ingest.busy_timeout_ms)
        self.run = _Runner("vigil-store")
        t = cfg.triage
        policy = TriagePolicy(t.dedupe_window_minutes * 60_000, t.timezone,
                              t.late_night_start_hour, t.late_night_end_hour)
        self.alerter = Alerter(self.store, self.run, cfg.smtp, cfg.alerts, self.public_url(),
                               self.clock)
        i = cfg.ingest
        self.writer = Writer(self.wstore, policy, i.batch_max, i.queue_max, i.backoff_ms,
                             on_items=self.alerter.on_items, clock=self.clock)
        self.hub = Hub()
        self.hub.active = await self.run(self.feed.active)
        self.catalogue = RuleCatalogue()
        # rules version 0: the library an agent ships with, used until its first bundle
        self.catalogue.add_rules(rule_to_dict(r) for r in load_library(DEFAULT_LIBRARY).rules)
        await self._learn_versions()
        key, cert, ca = (pki.server_key.read_bytes(), pki.server_cert.read_bytes(),
                         pki.ca_cert.read_bytes())

        stream_srv = grpc.aio.server(options=_grpc_options())
        self.collector_service = CollectorService(
            self.store, self.run, self.writer, self.hub,
            Limits(i.max_context_chars, i.max_title_chars, i.max_match_chars,
                   i.max_screenshot_bytes),
            AgentSettings(i.heartbeat_seconds, i.context_chars, i.screenshot_min_severity,
                          i.excluded_windows, i.excluded_processes), self.clock,
            max_connections=cfg.server.max_connections, retry_after_ms=i.backoff_ms,
            artefacts=ArtefactStore(cfg.data_dir),
            fetch_limit=FetchLimit(cfg.server.model_fetch_concurrency),
            fetch_retry_after_ms=cfg.server.model_fetch_retry_after_ms,
            catalogue=self.catalogue, check_rules=i.check_rules,
            rules_retry_ms=max(1000, int(cfg.server.rules_poll_seconds * 2000)))
        stream_srv.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "vigil.v1.Collector", {
                "Connect": grpc.stream_stream_rpc_method_handler(
                    self.collector_service.Connect,
                    request_deserializer=lenient(pb.AgentMessage),
                    response_serializer=pb.CollectorMessage.SerializeToString),
                "FetchModel": grpc.unary_stream_rpc_method_handler(
                    self.collector_service.FetchModel,
                    request_deserializer=lenient(pb.ModelRequest),
                    response_serializer=pb.ModelChunk.SerializeToString)}),))
        enrol_srv = grpc.aio.server(options=_grpc_options())
        enrol_service = EnrollmentService(
            self.store, self.run, pki, public_key_path(cfg.data_dir),
            TokenBucket(cfg.enrolment.rate_per_second, cfg.enrolment.burst), self.clock)
        # Registered by hand (not add_*Servicer_to_server) so that a request that does not
        # parse reaches the servicer as `Malformed` and gets INVALID_ARGUMENT, not UNKNOWN.
        enrol_srv.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "vigil.v1.Enrollment", {"Enroll": grpc.unary_unary_rpc_method_handler(
                enrol_service.Enroll, request_deserializer=lenient(pb.EnrollRequest),
                response_serializer=pb.EnrollResponse.SerializeToString)}),))
        self.health = HealthServicer()
        for srv in (stream_srv, enrol_srv):
            health_pb2_grpc.add_HealthServicer_to_server(self.health, srv)
        mtls = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca,
                                           require_client_auth=True)
        tls = grpc.ssl_server_credentials([(key, cert)])
        for name, srv, addr, creds in (("stream", stream_srv, cfg.server.listen, mtls),
                                       ("enrol", enrol_srv, cfg.server.enroll_listen, tls)):
            host, _ = _split(addr)
            try:
                port = srv.add_secure_port(addr, creds)
            except RuntimeError:
                port = 0
            if port == 0:
                raise ServerError(f"cannot listen on {addr} ({name}); is the port in use?")
            self.listeners[name] = f"{host}:{port}"
            await srv.start()
            self._servers.append(srv)
        for svc in ("", "vigil.v1.Collector", "vigil.v1.Enrollment"):
            await self.health.set(svc, health_pb2.HealthCheckResponse.SERVING)

        self._tasks.append(asyncio.create_task(self.writer.run(), name="writer"))
        wake = await self._listen_for_publishes()
        self._tasks.append(asyncio.create_task(self.hub.watch(
            lambda: self.run(self.feed.active_number),
            self._active_version, cfg.server.rules_poll_seconds,
            lambda since: self.run(self.feed.revoked_since, since), self.clock, wake),
            name="fanout"))
        self._tasks.append(asyncio.create_task(self.alerter.run_escalations(), name="alerts"))
        if self.scheduled_purge:
            self._tasks.append(asyncio.create_task(
                retention.run_scheduled(self.store, self.run, cfg.retention), name="purge"))
        if self.want_console:
            await self._start_console(pki)
        self._start_weekly()
        return dict(self.listeners)

    def _start_weekly(self) -> None:
        """The weekly summary on a schedule ([reports] weekly_day/hour; "" turns it off)."""
        from collector.services.weekly_schedule import WeeklySchedule

        r = self.cfg.reports
        if not r.weekly_day:
            return
        store: Any = self.store  # the store classes carry the console repositories too
        try:
            self.weekly = WeeklySchedule(
                store, self.store.is_leader, self.run, self.cfg.smtp, day=r.weekly_day,
                hour=r.weekly_hour, timezone=self.cfg.triage.timezone,
                check_seconds=r.weekly_check_seconds, public_url=self.alerter.public_url,
                clock=self.clock)
        except ValueError as exc:
            raise ServerError(f"collector.toml: {exc}") from None
        self._tasks.append(asyncio.create_task(self.weekly.run_forever(), name="weekly"))

    async def _listen_for_publishes(self) -> asyncio.Event | None:
        """On PostgreSQL: an event set by every ``NOTIFY vigil_rules`` (and after the LISTEN
        connection comes back, when a notification may have been missed). None on SQLite,
        where the fan-out polls only."""
        if self.store.backend != "postgresql":
            return None
        from collector.store.pg_notify import RULES_CHANNEL
        from collector.store.postgres import PostgresStore

        assert isinstance(self.store, PostgresStore)
        wake = asyncio.Event()
        listener = self.store.listener((RULES_CHANNEL,))
        listener.subscribe(RULES_CHANNEL, lambda _payload: wake.set())
        try:
            await listener.start()
            log.info("rule publishes wake this process (LISTEN %s); the poll every %.1f s "
                     "is the safety net", RULES_CHANNEL, self.cfg.server.rules_poll_seconds)
        except Exception as exc:
            # Not fatal: the poll every server.rules_poll_seconds still finds the publish,
            # and the listener keeps reconnecting (with back-off) in the background.
            log.warning("LISTEN %s is not ready (%s); rule publishes are found by the poll "
                        "every %.1f s until it is", RULES_CHANNEL, exc,
                        self.cfg.server.rules_poll_seconds)
        self.listener = listener
        return wake

    async def _learn_versions(self) -> None:
        """Add every published version not yet in the catalogue (bundles are immutable)."""
        for full in await self.run(self.feed.unlearnt, self.catalogue.versions):
            try:
                self.catalogue.add_bundle(full.version, full.bundle)
            except (ValueError, KeyError, TypeError) as exc:
                log.error("rules version %d in the store is unreadable (%s); "
                          "captures made with it will be refused", full.version, exc)

    async def _active_version(self) -> RuleVersion | None:
        """For the fan-out poll: a new active version is learnt before it is pushed."""
        await self._learn_versions()
        rv: RuleVersion | None = await self.run(self.feed.active)
        return rv

    def public_url(self) -> str:
        if self.cfg.server.public_url:
            return self.cfg.server.public_url
        host, port = _split(self.cfg.server.console_listen)
        return f"https://{'localhost' if host in ('0.0.0.0', '127.0.0.1') else host}:{port}"  # noqa: S104

    async def _start_console(self, pki: Pki) -> None:
        try:
            console = importlib.import_module("collector.console")
            create_app = console.create_app
        except (ImportError, AttributeError) as exc:
            log.warning("console not available (%s); serving gRPC only", exc)
            return
        import uvicorn

        host, port = _split(self.cfg.server.console_listen)
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise ServerError(f"cannot listen on {host}:{port} (console): {exc.strerror}") \
                from None
        real_port = sock.getsockname()[1]
        public = self.cfg.server.public_url or f"https://{'localhost' if host in ('0.0.0.0', '127.0.0.1') else host}:{real_port}"  # noqa: E501, S104
        self.alerter.public_url = public.rstrip("/")
        proxies = list(self.cfg.server.trusted_proxies)
        if self.store.backend == "sqlite":
            app = create_app(db_path=self.cfg.db_path, data_dir=self.cfg.data_dir,
                             public_url=public, allowed_hosts=list(self.cfg.server.allowed_hosts),
                             trusted_proxies=proxies, smtp=self.cfg.smtp)
        else:
            # The console's own pool on the shared store (closed in stop()).
            self._console_store = open_configured_store(self.cfg, migrate=False)
            app = create_app(store=self._console_store, data_dir=self.cfg.data_dir,
                             public_url=public, allowed_hosts=list(self.cfg.server.allowed_hosts),
                             trusted_proxies=proxies, smtp=self.cfg.smtp)
        config = uvicorn.Config(app, ssl_certfile=str(pki.server_cert),
                                ssl_keyfile=str(pki.server_key), log_level="warning",
                                lifespan="auto")
        self._uvicorn = uvicorn.Server(config)
        self._uvicorn.install_signal_handlers = lambda: None
        self._tasks.append(asyncio.create_task(self._uvicorn.serve(sockets=[sock]),
                                               name="console"))
        for _ in range(400):
            if self._uvicorn.started:
                break
            await asyncio.sleep(0.025)
        self.listeners["console"] = f"https://{host}:{real_port}/"

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, let the writer drain (acks for what it commits), then close."""
        await self.health.enter_graceful_shutdown() if hasattr(self, "health") else None
        for conn in list(getattr(self, "hub", Hub()).connections.values()):
            conn.end_unavailable("collector shutting down", self.cfg.ingest.backoff_ms)
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        writer_task = next((t for t in self._tasks if t.get_name() == "writer"), None)
        if writer_task is not None:
            await self.writer.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer_task, timeout=30)
            await self.writer.wait_side_tasks()
        await asyncio.gather(*(s.stop(grace) for s in self._servers), return_exceptions=True)
        for task in self._tasks:
            if task is not writer_task and task.get_name() != "console":
                task.cancel()
        console = [t for t in self._tasks if t.get_name() == "console"]
        if console:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(console[0], timeout=10)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.listener is not None:
            await self.listener.close()
        if hasattr(self, "writer"):
            self.writer.close()
            self.run.close()
            if self.wstore is not self.store:
                self.wstore.close()
            self.store.close()
        if self._console_store is not None:
            self._console_store.close()
