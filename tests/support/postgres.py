"""Run a REAL PostgreSQL server for tests: Debian's ``initdb`` + ``postgres`` in a temp dir,
on a free 127.0.0.1 port, with durability off (fsync, synchronous_commit, full_page_writes)
because a test cluster is thrown away.

    server = PgServer.start()            # waits until it accepts connections
    url = server.create_database()       # fresh, empty database
    url = server.create_database(template="vigil_template")  # a copy (fast: file copy)
    server.stop()                        # fast shutdown, temp dir removed

PostgreSQL refuses to run as root. As root (CI containers, this machine), the server runs as
the ``postgres`` system user that Debian's package creates (or ``nobody`` when it is missing),
through ``setpriv``, which also sets a parent-death signal: if the test process is killed,
the server goes with it instead of lingering. Not as root, it runs as the current user.

The pytest fixtures (``pg_server`` per session, ``pg_url`` per test: a fresh database with
Vigil's PostgreSQL migrations already applied) are in tests/support/pg_fixtures.py,
registered by tests/conftest.py. Tests that need PostgreSQL skip when no server binaries are
installed (``scripts/test`` installs Debian's ``postgresql``), unless VIGIL_REQUIRE_POSTGRES=1
(CI), where a missing server is an error.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["PgServer", "PgUnavailable", "find_bin_dir"]

_SUPERUSER = "vigil"
_READY_TIMEOUT_S = 60.0


class PgUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine (install Debian's ``postgresql``)."""


def find_bin_dir() -> Path:
    """The newest Debian PostgreSQL bin dir (``/usr/lib/postgresql/<major>/bin``), else the
    directory of ``initdb`` on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name)
                   if Path(p).parent.parent.name.isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path and shutil.which("postgres", path=str(Path(on_path).resolve().parent)):
        return Path(on_path).resolve().parent
    raise PgUnavailable("PostgreSQL server binaries not found (looked in "
                        "/usr/lib/postgresql/*/bin and PATH); apt-get install postgresql")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> tuple[list[str], int | None, int | None]:
    """The command prefix that drops root (and the uid/gid that will own the files)."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0:
        return ([setpriv, "--pdeathsig", "TERM"] if setpriv else []), None, None
    if setpriv is None:
        raise PgUnavailable("running as root needs setpriv (util-linux) to start PostgreSQL "
                            "as an unprivileged user")
    for name in ("postgres", "nobody"):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            continue
        return ([setpriv, f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups",
                 "--pdeathsig", "TERM"], pw.pw_uid, pw.pw_gid)
    raise PgUnavailable("running as root and neither a 'postgres' nor a 'nobody' user exists")


@dataclass
class PgServer:
    """One throwaway cluster. ``url(dbname)`` is a libpq URL for the superuser ``vigil``."""

    bin_dir: Path
    root: Path
    port: int
    proc: subprocess.Popen[bytes]
    _prefix: list[str] = field(default_factory=list)
    _names: itertools.count[int] = field(default_factory=itertools.count)

    # -- lifecycle -------------------------------------------------------------------------
    @classmethod
    def start(cls, bin_dir: Path | None = None) -> PgServer:
        bin_dir = bin_dir or find_bin_dir()
        prefix, uid, gid = _run_as()
        root = Path(tempfile.mkdtemp(prefix="vigil-pg-"))
        try:
            os.chmod(root, 0o700)
            if uid is not None and gid is not None:
                os.chown(root, uid, gid)
            data = root / "data"
            subprocess.run(
                [*prefix, str(bin_dir / "initdb"), "-D", str(data), "-U", _SUPERUSER,
                 "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"],
                check=True, capture_output=True, cwd=root)
            last: Exception | None = None
            for _ in range(5):  # another process may take the free port before we bind it
                port = _free_port()
                proc = cls._spawn(prefix, bin_dir, root, port)
                server = cls(bin_dir, root, port, proc, prefix)
                try:
                    server._wait_ready()
                    return server
                except _StartFailed as exc:
                    last = exc
                    server._kill()
            raise RuntimeError(f"PostgreSQL did not start: {last}")
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise

    @staticmethod
    def _spawn(prefix: list[str], bin_dir: Path, root: Path, port: int
               ) -> subprocess.Popen[bytes]:
        settings = {
            "listen_addresses": "127.0.0.1", "port": str(port),
            "unix_socket_directories": str(root), "fsync": "off",
            "synchronous_commit": "off", "full_page_writes": "off",
            "max_connections": "200", "shared_buffers": "64MB",
            "dynamic_shared_memory_type": "mmap", "logging_collector": "off",
            "log_min_messages": "warning", "max_locks_per_transaction": "256",
        }
        args = [*prefix, str(bin_dir / "postgres"), "-D", str(root / "data")]
        for k, v in settings.items():
            args += ["-c", f"{k}={v}"]
        log = open(root / "server.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=root)
        finally:
            log.close()

    def _wait_ready(self) -> None:
        """Connect until the server answers (it prints nothing we could wait on reliably);
        fail at once if the process exits."""
        import psycopg

        deadline = time.monotonic() + _READY_TIMEOUT_S
        delay = 0.01
        while True:
            if self.proc.poll() is not None:
                raise _StartFailed(f"exited with {self.proc.returncode}: {self.log()[-2000:]}")
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise _StartFailed(f"not ready after {_READY_TIMEOUT_S:.0f} s: {exc}; "
                                       f"{self.log()[-2000:]}") from exc
            # wait on the process itself: returns at once if it dies
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=delay)
            delay = min(delay * 2, 0.2)

    def stop(self) -> None:
        """Fast shutdown (SIGINT), then remove the cluster's files."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(2)
                try:
                    self.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self._kill()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def _kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def log(self) -> str:
        try:
            return (self.root / "server.log").read_text(errors="replace")
        except OSError:
            return ""

    # -- databases -------------------------------------------------------------------------
    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{_SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str | None = None, template: str = "template0") -> str:
        """A new database (copied from ``template``); returns its URL."""
        import psycopg
        from psycopg import sql

        name = name or f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


class _StartFailed(Exception):
    pass
