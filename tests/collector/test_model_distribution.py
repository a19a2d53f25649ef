"""The scorer model travels as signed data: a REAL collector (subprocess, mTLS on 127.0.0.1
port 0) and a real agent runtime in-process, with small fake artefacts on real files.

The loader is not under test here (a fake one reads the manifest's version, and fires on
"xyzzy" so the test can see which model scores typed text); the distribution is.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

import rules
from agent.config import Config
from agent.enrol import enroll
from agent.modelfetch import ModelFetcher
from agent.paths import DataDir
from agent.sources import KeyEvent
from agent.status import status_report
from proto import vigil_pb2 as pb
from proto import vigil_pb2_grpc as pb_grpc
from proto.identity import KEEPALIVE_OPTIONS
from rules.artefact import ModelRef, artefact_digest
from rules.scorer import model_rule
from tests.support.agent import InProcessAgent, no_backends
from tests.support.agent_client import enrolled
from tests.support.collector import RunningCollector, start_collector

HERE = Path(__file__).parent
MIB = 1 << 20


def make_artefact(root: Path, version: str, weights: int, seed: int = 0) -> Path:
    folder = root / f"model-{version}"
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(random.Random(seed).randbytes(weights))
    (folder / "vocab.txt").write_text(f"[PAD]\n[UNK]\n{version}\n")
    (folder / "manifest.json").write_text(json.dumps({"name": "vigil-minilm",
                                                      "version": version}))
    return folder


class FakeScorer:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.version = json.loads((folder / "manifest.json").read_text())["version"]

    def hits(self, text: str, source: str = "keys", group: str | None = None,
             context_chars: int = 120) -> list[rules.Hit]:
        if "xyzzy" not in text:
            return []
        return [rules.Hit(rule=model_rule("self_harm", 4), match="xyzzy",
                          context=text[:context_chars], match_kind="normalised", score=0.9,
                          reasons=(f"model {self.version}: self_harm 0.90",))]


def config() -> Config:
    return Config(rules_library=str(HERE / "rules_v1"), backoff_initial_seconds=0.05,
                  backoff_max_seconds=0.5, heartbeat_seconds=1, merge_seconds=0,
                  screenshot_min_severity=6, watch_media=False)


async def enrolled_data(c: RunningCollector, root: Path) -> DataDir:
    data = DataDir(root).ensure()
    token = c.create_token()
    await asyncio.to_thread(enroll, data, c.enrol_addr, token, c.ca_path, c.stream_addr)
    return data


def agent(data: DataDir, shipped: Path, **kw: Any) -> InProcessAgent:
    return InProcessAgent(data, config(), backends=no_backends(), shipped_model=shipped,
                          scorer_loader=FakeScorer, **kw)


def fetcher(a: InProcessAgent) -> ModelFetcher:
    assert a.runtime.models is not None
    return a.runtime.models


def scorer_version(a: InProcessAgent) -> str | None:
    s = a.runtime.scorer
    return None if s is None else str(s.version)


def fetch_lines(c: RunningCollector) -> list[str]:
    return [line for line in c.log().splitlines() if "model fetch:" in line]


async def until(cond: Any, what: str, timeout: float = 30.0) -> None:
    """Poll a condition the test cannot wait on as an event (another task's counters)."""
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.02)


async def settled(a: InProcessAgent, rules_version: int) -> None:
    await a.wait_for(lambda: a.runtime.rules.version == rules_version
                     and not fetcher(a).pending, what=f"rules v{rules_version} settled")


def type_into(a: InProcessAgent, text: str) -> None:
    for ch in text:
        a.runtime.monitor.on_key(KeyEvent("char", ch))
    a.runtime.monitor.on_key(KeyEvent("reset"))


def active_model(c: RunningCollector) -> ModelRef:
    [(bundle,)] = c.query("SELECT bundle FROM rule_versions WHERE active = 1")
    pub = (c.data_dir / "rules" / "signing-public.pem").read_bytes()
    ref = rules.load_bundle(bundle, pub)[1].model
    assert ref is not None
    return ref


async def test_rule_only_publish_moves_no_model_bytes_a_model_change_does(
        tmp_path: Path) -> None:
    a_dir = make_artefact(tmp_path, "A", 1000, seed=1)
    b_dir = make_artefact(tmp_path, "B", 2 * MIB + 12345, seed=2)
    c = start_collector(tmp_path, init_args=("--model", str(a_dir)))
    try:
        data = await enrolled_data(c, tmp_path / "agent")
        captures: list[pb.Capture] = []
        async with agent(data, a_dir, on_capture=captures.append) as ag:
            await settled(ag, 1)
            assert scorer_version(ag) == "A" and fetcher(ag).requests == []

            out = c.cli("rules", "publish", str(HERE / "rules_v2")).stdout
            assert "published version 2" in out and "model vigil-minilm A" in out
            await settled(ag, 2)
            # a rule-only publish names the same digest: not one model byte moved
            assert fetcher(ag).requests == [] and fetch_lines(c) == []
            assert c.query("SELECT length(bundle) FROM rule_versions WHERE version = 2")[0][0] \
                < 20_000

            out = c.cli("rules", "publish", str(HERE / "rules_v2"), "--model", str(b_dir),
                        "--note", "new model").stdout
            assert "model vigil-minilm B" in out
            await ag.wait_for(lambda: scorer_version(ag) == "B", what="the swap to model B")
            f = fetcher(ag)
            digest_b, files_b, size_b = artefact_digest(b_dir)
            assert f.in_use == digest_b and not f.pending
            assert f.requests == [("manifest.json", 0), ("model.onnx", 0), ("vocab.txt", 0)]
            assert f.bytes_received == size_b and f.chunks == 3 + 2  # model.onnx: 3 chunks
            stored = data.root / "models" / digest_b
            assert {p.name for p in stored.iterdir()} == set(files_b)
            assert (c.data_dir / "models" / digest_b).is_dir()
            # the new model now scores what is typed
            type_into(ag, "well xyzzy then")
            await ag.wait_for(lambda: captures, what="a capture from model B")
            assert captures[0].rule_id == "model.self_harm"
            assert "model B" in captures[0].reasons[0]
            ag.runtime.write_state(True)
            assert f"model B ({digest_b[:12]})" in status_report(data, config())

            # rollback: back to rules v2 + model A, the one in the package: no download
            out = c.cli("rules", "rollback").stdout
            assert "rollback:2" in out and "model vigil-minilm A" in out
            await settled(ag, 4)
            assert scorer_version(ag) == "A" and len(f.requests) == 3
            # the same model B again (published once more): the agent's copy, no download
            c.cli("rules", "publish", str(HERE / "rules_v1"), "--model", str(b_dir))
            await settled(ag, 5)
            assert scorer_version(ag) == "B" and len(f.requests) == 3
        assert len(fetch_lines(c)) == 3
    finally:
        c.stop()


def cutting_factory(data: DataDir, address: str) -> Any:
    """An mTLS channel on which the model.onnx download breaks after its first chunk, and
    every later one before any chunk (the network stays down for it)."""

    class Cut(grpc.aio.UnaryStreamClientInterceptor):
        calls = 0

        async def intercept_unary_stream(self, continuation: Any, details: Any,
                                         request: Any) -> Any:
            call = await continuation(details, request)
            if getattr(request, "file", "") != "model.onnx":
                return call
            Cut.calls += 1
            first = Cut.calls == 1

            async def cut() -> AsyncIterator[pb.ModelChunk]:
                async for chunk in call:
                    if first:
                        yield chunk
                    break
                call.cancel()
                raise ConnectionResetError("network dropped (test)")

            return cut()

    creds = grpc.ssl_channel_credentials(data.ca_cert.read_bytes(), data.device_key.read_bytes(),
                                         data.device_cert.read_bytes())
    return lambda: grpc.aio.secure_channel(address, creds, options=list(KEEPALIVE_OPTIONS),
                                           interceptors=[Cut()])


async def test_an_interrupted_download_resumes_from_the_bytes_on_disk(tmp_path: Path) -> None:
    b_dir = make_artefact(tmp_path, "B", 3 * MIB + 7, seed=3)
    c = start_collector(tmp_path, init_args=("--model", str(b_dir)))
    try:
        data = await enrolled_data(c, tmp_path / "agent")
        digest = artefact_digest(b_dir)[0]
        part = data.root / "models" / digest / ".model.onnx.part"
        no_model = tmp_path / "not-shipped"
        async with agent(data, no_model,
                         channel_factory=cutting_factory(data, c.stream_addr)) as ag:
            await ag.wait_for(lambda: fetcher(ag).retries, what="a broken download")
            assert scorer_version(ag) is None  # nothing usable yet; rules still work
            assert ag.runtime.rules.version == 1
        assert part.stat().st_size == MIB  # the first chunk stayed on disk
        async with agent(data, no_model) as ag:  # the laptop comes back
            await ag.wait_for(lambda: scorer_version(ag) == "B", what="the resumed model")
            f = fetcher(ag)
            assert f.requests == [("model.onnx", MIB), ("vocab.txt", 0)]
            manifest = (b_dir / "manifest.json").stat().st_size
            assert f.bytes_received == artefact_digest(b_dir)[2] - manifest - MIB
        assert not part.exists()
        assert any(f"model.onnx, {2 * MIB + 7} bytes from offset {MIB}" in line
                   for line in fetch_lines(c))
    finally:
        c.stop()


async def test_a_tampered_file_is_refused_the_old_scorer_kept_and_rollback_uses_the_cache(
        tmp_path: Path) -> None:
    a_dir = make_artefact(tmp_path, "A", 500, seed=4)
    b_dir = make_artefact(tmp_path, "B", MIB + 99, seed=5)
    c = start_collector(tmp_path, init_args=("--model", str(b_dir)))
    digest_b = artefact_digest(b_dir)[0]
    served = c.data_dir / "models" / digest_b / "model.onnx"
    good = served.read_bytes()
    served.write_bytes(bytes([good[0] ^ 0xFF]) + good[1:])  # same size, one byte changed
    try:
        data = await enrolled_data(c, tmp_path / "agent")
        async with agent(data, a_dir) as ag:
            f = fetcher(ag)
            await ag.wait_for(lambda: f.retries and "does not match" in f.last_error,
                              what="the refusal")
            assert scorer_version(ag) == "A"  # the scorer in use stays
            assert not (data.root / "models" / digest_b / "model.onnx").exists()
            ag.runtime.write_state(True)
            status = status_report(data, config())
            assert "Learned scorer: model A" in status and "does not match" in status
            served.write_bytes(good)  # the collector's copy is repaired: the retry succeeds
            await ag.wait_for(lambda: scorer_version(ag) == "B", what="model B after retry")
            fetched = len(f.requests)

            c.cli("rules", "publish", str(HERE / "rules_v2"), "--model", str(a_dir))
            await settled(ag, 2)
            assert scorer_version(ag) == "A"
            out = c.cli("rules", "rollback").stdout
            assert "rollback:1" in out and "model vigil-minilm B" in out
            await settled(ag, 3)
            # model B came from the agent's own verified copy: nothing was downloaded
            assert scorer_version(ag) == "B" and len(f.requests) == fetched
    finally:
        c.stop()


async def test_downloads_past_the_concurrency_limit_are_told_to_retry_then_succeed(
        tmp_path: Path) -> None:
    b_dir = make_artefact(tmp_path, "B", 24 * MIB, seed=6)
    c = start_collector(tmp_path, {"server": {"model_fetch_concurrency": 2,
                                              "model_fetch_retry_after_ms": 200}},
                        init_args=("--model", str(b_dir)))
    stop = asyncio.Event()
    try:
        ref = active_model(c)
        holders = [await enrolled(c) for _ in range(2)]
        channels = [h.channel() for h in holders]
        held = [pb_grpc.CollectorStub(ch).FetchModel(
            pb.ModelRequest(digest=ref.digest, file="model.onnx")) for ch in channels]
        for call in held:  # two slow downloads: one chunk read, the rest left waiting
            assert len((await call.read()).data) == MIB

        clients = [await enrolled(c) for _ in range(3)]
        # the collector refuses what it never published
        async with clients[0].channel() as ch:
            stub = pb_grpc.CollectorStub(ch)
            for req in (pb.ModelRequest(digest="0" * 64, file="model.onnx"),
                        pb.ModelRequest(digest=ref.digest, file="../../vigil.db")):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    async for _ in stub.FetchModel(req):
                        pass
                assert err.value.code() == grpc.StatusCode.NOT_FOUND

        swapped: list[str] = []
        fetchers = [ModelFetcher(DataDir(tmp_path / f"laptop{i}").ensure(), cl.channel,
                                 load=FakeScorer,
                                 on_scorer=lambda s, _r: swapped.append(s.version),
                                 shipped=None, in_use=None, backoff_initial=0.05,
                                 backoff_max=0.5)
                    for i, cl in enumerate(clients)]
        tasks = [asyncio.create_task(f.run(stop)) for f in fetchers]
        for f in fetchers:
            f.want(ref)
        await until(lambda: all(any(code == "RESOURCE_EXHAUSTED" for code, _ in f.retries)
                                for f in fetchers), "refusals")
        for f in fetchers:  # each was told to wait, and honoured retry-after-ms (+ jitter)
            waits = [d for code, d in f.retries if code == "RESOURCE_EXHAUSTED"]
            assert waits and all(0.2 <= d <= 0.3 for d in waits), f.retries
        assert swapped == []
        for call in held:
            call.cancel()
        for ch in channels:
            await ch.close()
        await until(lambda: len(swapped) == 3, "all three downloads")
        assert swapped == ["B", "B", "B"]
        assert all(f.in_use == ref.digest and f.bytes_received == ref.size for f in fetchers)
        stop.set()
        await asyncio.gather(*tasks)
    finally:
        stop.set()
        c.stop()


async def test_publish_keeps_published_artefacts_within_retention(tmp_path: Path) -> None:
    dirs = [make_artefact(tmp_path, f"v{i}", 100 + i, seed=i) for i in range(5)]
    c = start_collector(tmp_path, {"retention": {"model_artefacts": 1}},
                        init_args=("--no-model",))
    try:
        for d in dirs:
            c.cli("rules", "publish", str(HERE / "rules_v1"), "--model", str(d))
        kept = {p.name for p in (c.data_dir / "models").iterdir() if p.is_dir()}
        # retention says 1, but rollback needs the recent ones: never fewer than 3
        assert kept == {artefact_digest(d)[0] for d in dirs[-3:]}
        out = c.cli("rules", "publish", str(HERE / "rules_v2"), "--no-model").stdout
        assert "with no model" in out
        shutil.rmtree(c.data_dir / "models" / artefact_digest(dirs[-1])[0])
        bad = c.cli("rules", "rollback", check=False)
        assert bad.returncode == 2 and "no longer kept" in bad.stderr
    finally:
        c.stop()
