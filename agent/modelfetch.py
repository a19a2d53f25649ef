"""The scorer model as data: follow the model the active signed bundle names.

When an applied bundle names a model (a signed ``rules.artefact.ModelRef``) whose digest is
not the one in use, :class:`ModelFetcher` makes it available in the background and then asks
for the scorer to be swapped:

* the artefact shipped in the agent's package, or one already complete under
  ``<data dir>/models/<digest>/`` (a rollback), is used without downloading;
* otherwise each missing file is downloaded with ``Collector.FetchModel`` (mTLS) into
  ``models/<digest>/.<file>.part``, resuming from the bytes already there;
* every file is checked against the signed sha256 before it is used; a mismatch deletes it
  and the scorer in use stays;
* failures are retried with back-off and jitter (``retry-after-ms`` honoured when the
  collector is at its download limit), and :meth:`ModelFetcher.describe` says what is going
  on for ``vigil-agent status``.

A rule-only bundle names the digest already in use: nothing happens. The uplink only calls
:meth:`ModelFetcher.want`, which returns at once, so a model never delays rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import shutil
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from proto import vigil_pb2 as pb
from proto import vigil_pb2_grpc as pb_grpc
from rules.artefact import ModelRef, artefact_digest, file_sha256

from .paths import DataDir
from .uplink import ChannelFactory, backoff_delay, retry_after_seconds

if TYPE_CHECKING:
    from proto.vigil_pb2_grpc import CollectorAsyncStub

__all__ = ["KEEP_MODELS", "ModelFetcher"]

log = logging.getLogger(__name__)

#: Downloaded artefacts kept on the laptop (the one in use and the latest others: rollback).
KEEP_MODELS = 3


class _Refused(Exception):
    """A file did not match its signed hash or size: deleted; the old scorer stays."""


class ModelFetcher:
    """Follows ``ActiveRules.model``; ``on_scorer(scorer, ref)`` swaps the new one in."""

    def __init__(self, data: DataDir, channel_factory: ChannelFactory | None, *,
                 load: Callable[[Path], Any],
                 on_scorer: Callable[[Any, ModelRef | None], None],
                 shipped: Path | None, in_use: Path | None,
                 backoff_initial: float = 1.0, backoff_max: float = 300.0,
                 timeout: float = 120.0,
                 rng: Callable[[], float] = random.random) -> None:
        self.root = data.root / "models"
        self.channel_factory = channel_factory
        self.load, self.on_scorer = load, on_scorer
        #: The folder the scorer in use was loaded from (its digest is computed in run()).
        self.shipped, self.in_use_folder = shipped, in_use
        self.backoff_initial, self.backoff_max = backoff_initial, backoff_max
        self.timeout, self.rng = timeout, rng
        self.in_use = ""          # digest of the artefact the scorer was loaded from
        self.state = "idle"
        self.last_error = ""
        #: (file, offset) of every FetchModel request, and bytes received: what went on the
        #: wire, for status and tests.
        self.requests: list[tuple[str, int]] = []
        self.bytes_received = self.chunks = 0
        self.retries: list[tuple[str, float]] = []
        self._shipped_digest: str | None = None
        self._target: ModelRef | None = None
        self._wanted = self._busy = False
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    # -- called from the rules side (any thread; returns at once) ----------------------------
    def want(self, ref: ModelRef | None) -> None:
        """The active bundle names ``ref`` (None: the package's own model)."""
        with self._lock:
            self._target, self._wanted = ref, True
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

    def local(self, ref: ModelRef | None) -> Path | None:
        """A folder holding ``ref``'s verified files without downloading, or None. Blocking
        (hashes the files): call it at start-up or from a worker thread."""
        if ref is None:
            return self.shipped if self.shipped is not None and self.shipped.is_dir() else None
        if self.shipped is not None and self._shipped_is(ref.digest):
            return self.shipped
        folder = self.root / ref.digest
        try:
            for name, sha in ref.files.items():
                path = folder / name
                if not path.is_file():
                    return None
                if file_sha256(path) != sha:
                    log.error("stored model file %s does not match its signed sha256; "
                              "deleting it", path)
                    path.unlink(missing_ok=True)
                    return None
        except OSError as exc:
            log.error("cannot read the stored model %s: %s", folder, exc)
            return None
        return folder

    @property
    def pending(self) -> bool:
        """A model the rules named is not settled yet (being checked, fetched or retried)."""
        with self._lock:
            return self._wanted or self._busy

    def describe(self) -> str:
        """One line for ``status``: empty when the model in use is the one the rules name."""
        return "" if self.state in ("idle", "up to date") else self.state

    # -- the background task -------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        if self.in_use_folder is not None:
            folder = self.in_use_folder
            try:
                self.in_use = (await asyncio.to_thread(artefact_digest, folder))[0]
            except (OSError, ValueError) as exc:
                log.warning("cannot hash the model in use (%s): %s", folder, exc)
        while not stop.is_set():
            with self._lock:
                wanted, ref = self._wanted, self._target
                self._wanted, self._busy = False, wanted
            if wanted:
                try:
                    await self._follow(ref, stop)
                except Exception as exc:  # the task outlives any one model
                    self.state = f"failed: {type(exc).__name__}: {exc}"
                    log.exception("model follow failed; waiting for the next bundle")
                finally:
                    self._busy = False
            else:
                self._wake.clear()
                with self._lock:
                    if self._wanted:
                        continue
                await self._nap(stop, 3600.0)

    async def _follow(self, ref: ModelRef | None, stop: asyncio.Event) -> None:
        if ref is None and (self.shipped is None or not self.shipped.is_dir()):
            self.state = "up to date"  # nothing named and nothing shipped: keep what we have
            return
        if ref is None:
            digest = await asyncio.to_thread(self._shipped_digest_now)
            if digest is None:
                self.state = "up to date"
                return
        else:
            digest = ref.digest
        if digest == self.in_use:
            self.state = "up to date"
            return
        label = f"{ref.name} {ref.version} ({digest[:12]})" if ref else "the package's model"
        attempt = 0
        while not stop.is_set() and not self._superseded():
            try:
                folder = await asyncio.to_thread(self.local, ref)
                if folder is None:
                    assert ref is not None
                    folder = await self._download(ref, label)
                self.state = f"loading {label}"
                try:
                    scorer = await asyncio.to_thread(self.load, folder)
                except Exception as exc:  # a verified artefact that will not load stays bad
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    self.state = f"failed to load {label}: {self.last_error}"
                    log.error("model %s verified but cannot be loaded; keeping the scorer in "
                              "use: %s", label, self.last_error)
                    return
                self.on_scorer(scorer, ref)
                self.in_use, self.last_error, self.state = digest, "", "up to date"
                log.info("scorer swapped to %s", label)
                with contextlib.suppress(OSError):
                    os.utime(folder)
                await asyncio.to_thread(self._prune)
                return
            except grpc.aio.AioRpcError as exc:
                self.last_error = f"{exc.code().name}: {exc.details()}"
                delay = retry_after_seconds(exc.trailing_metadata())
                if delay is not None:  # the collector is at its download limit: spread out
                    delay *= 1 + self.rng() / 2
            except _Refused as exc:
                self.last_error, delay = f"refused: {exc}", None
            except (OSError, grpc.RpcError, ValueError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                delay = None
            except Exception as exc:  # never let a model problem end the task
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("model fetch failed unexpectedly")
                delay = None
            if delay is None:
                delay = backoff_delay(attempt, self.backoff_initial, self.backoff_max, self.rng)
            attempt += 1
            self.retries.append((self.last_error.split(":", 1)[0], delay))
            del self.retries[:-50]
            self.state = (f"fetching {label}: retry {attempt} in {delay:.1f} s after "
                          f"{self.last_error}")
            log.warning("model %s not ready, retrying in %.1f s: %s", label, delay,
                        self.last_error)
            assert self._wake is not None
            self._wake.clear()
            if self._superseded():
                return
            await self._nap(stop, delay)  # a newer bundle (or stop) wakes us early

    async def _nap(self, stop: asyncio.Event, timeout: float) -> None:
        assert self._wake is not None
        waits = {asyncio.create_task(self._wake.wait()), asyncio.create_task(stop.wait())}
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in waits:
                t.cancel()

    def _superseded(self) -> bool:
        with self._lock:
            return self._wanted

    def _shipped_is(self, digest: str) -> bool:
        return self._shipped_digest_now() == digest

    def _shipped_digest_now(self) -> str | None:
        if self._shipped_digest is None and self.shipped is not None and self.shipped.is_dir():
            try:
                self._shipped_digest = artefact_digest(self.shipped)[0]
            except (OSError, ValueError) as exc:
                log.warning("the package's model %s is unusable: %s", self.shipped, exc)
        return self._shipped_digest

    # -- downloading -----------------------------------------------------------------------
    async def _download(self, ref: ModelRef, label: str) -> Path:
        if self.channel_factory is None:
            raise OSError("not enrolled: no collector to fetch the model from")
        folder = self.root / ref.digest
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        channel = self.channel_factory()
        try:
            stub = pb_grpc.CollectorStub(channel)  # an aio channel: the async stub
            for name in sorted(ref.files):
                if (folder / name).is_file():
                    continue  # complete and verified by local() just before
                await self._fetch_file(stub, ref, folder, name, label)
        finally:
            await channel.close(grace=None)
        total = sum((folder / n).stat().st_size for n in ref.files)
        if total != ref.size:
            for n in ref.files:
                (folder / n).unlink(missing_ok=True)
            raise _Refused(f"model {label} is {total} bytes, the signed size is {ref.size}")
        return folder

    async def _fetch_file(self, stub: CollectorAsyncStub, ref: ModelRef, folder: Path,
                          name: str, label: str) -> None:
        part = folder / f".{name}.part"
        offset = part.stat().st_size if part.exists() else 0
        if offset > ref.size:
            part.unlink()
            offset = 0
        self.requests.append((name, offset))
        call = stub.FetchModel(pb.ModelRequest(digest=ref.digest, file=name, offset=offset),
                               timeout=self.timeout)
        with open(part, "ab") as fh:
            pos = offset
            async for chunk in self._chunks(call, part):
                if chunk.offset != pos:
                    raise _Refused(f"{name}: chunk at offset {chunk.offset}, expected {pos}")
                if pos + len(chunk.data) > ref.size:
                    fh.close()
                    part.unlink(missing_ok=True)
                    raise _Refused(f"{name}: more bytes than the signed model size {ref.size}")
                fh.write(chunk.data)
                pos += len(chunk.data)
                self.bytes_received += len(chunk.data)
                self.chunks += 1
                self.state = f"downloading {label}: {name} {pos}/{chunk.file_size} bytes"
            fh.flush()
            os.fsync(fh.fileno())
        sha = await asyncio.to_thread(file_sha256, part)
        if sha != ref.files[name]:
            part.unlink(missing_ok=True)
            raise _Refused(f"{name}: sha256 {sha[:12]}… does not match the signed "
                           f"{ref.files[name][:12]}…; refused and deleted, keeping the scorer "
                           "in use")
        os.replace(part, folder / name)

    @staticmethod
    async def _chunks(call: Any, part: Path) -> AsyncIterator[pb.ModelChunk]:
        try:
            async for chunk in call:
                yield chunk
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.OUT_OF_RANGE:
                part.unlink(missing_ok=True)  # longer than the file: start again from 0
            raise

    def _prune(self) -> None:
        """Keep the artefact in use and the most recently used others (rollback)."""
        if not self.root.is_dir():
            return
        dirs = sorted((p for p in self.root.iterdir() if p.is_dir()),
                      key=lambda p: p.stat().st_mtime, reverse=True)
        keep = {p.name for p in dirs[:KEEP_MODELS]} | {self.in_use}
        with self._lock:
            if self._target is not None:
                keep.add(self._target.digest)
        for p in dirs:
            if p.name not in keep:
                shutil.rmtree(p, ignore_errors=True)
                log.info("deleted old model artefact %s", p.name[:12])
