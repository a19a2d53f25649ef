"""Fuzz the collector's gRPC endpoints with hypothesis over real mutual TLS.

The fuzzing client is a genuinely enrolled device that sends raw bytes through a generic
method handle (no protobuf serializer): random bytes, truncated real messages, fields with
the wrong wire type, invalid UTF-8 in string fields, and messages over the 8 MiB limit.
Meanwhile a well-behaved agent keeps streaming captures on its own connection; every one of
its captures must be acknowledged. The fuzzer must get a clear answer, never a silent OK: a
message that does not parse ends its stream with a non-OK code, except a capture batch, whose
undecodable captures are each refused as ``undecodable`` in its Ack.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator

import grpc
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from proto import vigil_pb2 as pb
from proto.identity import MAX_MESSAGE_BYTES
from tests.support.agent_client import AgentClient, make_capture
from tests.support.collector import RunningCollector

from .helpers import client, run_async

CONNECT = "/vigil.v1.Collector/Connect"
ENROLL = "/vigil.v1.Enrollment/Enroll"
CLEAR = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED,
         grpc.StatusCode.INTERNAL, grpc.StatusCode.FAILED_PRECONDITION}


class GoodAgent:
    """A well-behaved device streaming one capture every 20 ms in its own thread/loop."""

    def __init__(self, c: RunningCollector) -> None:
        self.c = c
        self.sent: list[str] = []
        self.acked: set[str] = set()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self.ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        try:
            a = client(self.c, "pc-good")
            await a.enrol(self.c.create_token())
            async with a.connect() as s:
                await s.heartbeat()
                while not self._stop.is_set():
                    cap = make_capture()
                    self.sent.append(cap.id)
                    await s.send_captures([cap])
                    if not self.ready.is_set() and s.acked:
                        self.ready.set()
                    await asyncio.sleep(0.02)  # pacing the load, not synchronisation
                want = set(self.sent)
                await s.wait_for(lambda s: want <= s.acked, timeout=60)
                self.acked = set(s.acked)
        except BaseException as exc:  # reported by finish()
            self.error = exc
        finally:
            self.ready.set()

    def __enter__(self) -> GoodAgent:
        self._thread.start()
        assert self.ready.wait(60), "the well-behaved agent never got an ack"
        assert self.error is None, repr(self.error)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(90)

    def finish(self) -> None:
        self._stop.set()
        self._thread.join(90)
        assert self.error is None, repr(self.error)
        assert self.sent and set(self.sent) <= self.acked


@pytest.fixture(scope="module")
def fuzzer(collector: RunningCollector) -> Iterator[grpc.Channel]:
    a: AgentClient = client(collector, "pc-fuzz")
    run_async(a.enrol(collector.create_token()))
    assert a.cert_pem is not None
    creds = grpc.ssl_channel_credentials(root_certificates=collector.ca_pem,
                                         private_key=a.key_pem, certificate_chain=a.cert_pem)
    ch = grpc.secure_channel(collector.stream_addr, creds,
                             options=[("grpc.max_send_message_length", 4 * MAX_MESSAGE_BYTES)])
    try:
        yield ch
    finally:
        ch.close()


def _send_raw(ch: grpc.Channel, frames: list[bytes],
              until: Callable[[list[bytes]], bool] = lambda _r: True,
              wait: float = 1.0) -> tuple[grpc.StatusCode, list[bytes]]:
    """Send raw frames on one Connect stream; keep it open (up to ``wait`` s) until
    ``until(replies)`` holds, like an agent that waits for its acks; then half-close."""
    call = ch.stream_stream(CONNECT)  # no serializers: raw bytes on the wire
    got: list[bytes] = []
    enough = threading.Event()

    def requests() -> Iterator[bytes]:
        yield from frames
        enough.wait(wait)

    try:
        for reply in call(requests(), timeout=30):
            got.append(reply)
            if until(got):
                enough.set()
    except grpc.RpcError as exc:
        return exc.code(), got  # type: ignore[attr-defined]
    finally:
        enough.set()
    return grpc.StatusCode.OK, got


def _parses(frame: bytes) -> bool:
    try:
        pb.AgentMessage.FromString(frame)
    except Exception:
        return False
    return True


def _valid_frames() -> list[bytes]:
    cap = make_capture(context="ctx " * 20)
    return [pb.AgentMessage(heartbeat=pb.Heartbeat(agent_version="x", os_user="u"))
            .SerializeToString(),
            pb.AgentMessage(captures=pb.CaptureBatch(captures=[cap])).SerializeToString(),
            pb.AgentMessage(rules_ack=pb.RulesAck(version=3, error="e")).SerializeToString()]


@st.composite
def hostile_frame(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["random", "truncated", "wrong_type", "bad_utf8", "flip"]))
    if kind == "random":
        return draw(st.binary(min_size=1, max_size=512))
    base = draw(st.sampled_from(_valid_frames()))
    if kind == "truncated":
        return base[:draw(st.integers(1, max(1, len(base) - 1)))]
    if kind == "wrong_type":
        # field 1..3 of AgentMessage (all sub-messages) sent as varint / fixed64 / fixed32
        field = draw(st.integers(1, 3))
        wire = draw(st.sampled_from([0, 1, 5]))
        payload = {0: b"\x96\x01", 1: b"\x00" * 8, 5: b"\x00" * 4}[wire]
        return bytes([(field << 3) | wire]) + payload
    if kind == "bad_utf8":
        # a Heartbeat whose agent_version (string field 1) holds bytes that are not UTF-8
        junk = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88"]))
        inner = b"\x0a" + bytes([len(junk)]) + junk
        return b"\x12" + bytes([len(inner)]) + inner
    pos = draw(st.integers(0, len(base) - 1))
    return base[:pos] + bytes([base[pos] ^ draw(st.integers(1, 255))]) + base[pos + 1:]


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(frame=hostile_frame())
@example(frame=b"\xff\xff\xff\xff")
@example(frame=b"\x08\x05")
def _fuzz_one(fuzzer: grpc.Channel, frame: bytes) -> None:
    code, replies = _send_raw(fuzzer, [frame])
    if _parses(frame):
        assert code in CLEAR | {grpc.StatusCode.OK}, code
        for r in replies:
            pb.CollectorMessage.FromString(r)  # whatever it answered is well-formed
    else:
        # docs/wire.md: an undecodable capture is refused alone (named, "undecodable") and
        # its stream goes on; any other undecodable message ends the stream non-OK.
        refused = [r for raw in replies for r in pb.CollectorMessage.FromString(raw).ack.rejected
                   if r.reason == "undecodable"]
        assert code in CLEAR or refused, f"unparseable frame {frame[:40]!r} ended with {code}"


def test_malformed_frames_get_a_clear_status_while_a_good_agent_is_served(
        collector: RunningCollector, fuzzer: grpc.Channel) -> None:
    with GoodAgent(collector) as good:
        try:
            _fuzz_one(fuzzer)
        finally:
            good.finish()
    assert collector.proc.poll() is None, "collector died"
    assert "Traceback" not in collector.log()


def test_oversized_and_enrolment_garbage_are_refused_cleanly(
        collector: RunningCollector, fuzzer: grpc.Channel) -> None:
    with GoodAgent(collector) as good:
        try:
            big = make_capture(context="x" * (MAX_MESSAGE_BYTES + 1024))
            frame = pb.AgentMessage(captures=pb.CaptureBatch(captures=[big])).SerializeToString()
            code, _ = _send_raw(fuzzer, [frame])
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
            # many captures just under the limit each, in one stream: all handled
            ok = [make_capture(context="y" * 400) for _ in range(200)]
            want = {c.id for c in ok}

            def acked_ids(replies: list[bytes]) -> set[str]:
                return {i for r in replies
                        for i in pb.CollectorMessage.FromString(r).ack.stored_ids}

            code, replies = _send_raw(fuzzer, [pb.AgentMessage(
                captures=pb.CaptureBatch(captures=ok)).SerializeToString()],
                until=lambda r: want <= acked_ids(r), wait=30)
            acked = acked_ids(replies)
            assert code == grpc.StatusCode.OK and {c.id for c in ok} <= acked
            # the enrolment port: garbage and giant requests are refused without a crash
            creds = grpc.ssl_channel_credentials(root_certificates=collector.ca_pem)
            with grpc.secure_channel(collector.enrol_addr, creds) as ch:
                enrol = ch.unary_unary(ENROLL)
                for raw in (b"\xff" * 64, b"\x0a\xff\xff\xff\xff\x0f",
                            pb.EnrollRequest(token="t" * 5000).SerializeToString(),
                            pb.EnrollRequest(token="vgl_x", csr_pem=b"\x00" * 20000)
                            .SerializeToString(),
                            pb.EnrollRequest(token="vgl_x", csr_pem=b"-----BEGIN CERTIFICATE "
                                             b"REQUEST-----\nAAAA\n-----END CERTIFICATE "
                                             b"REQUEST-----\n").SerializeToString()):
                    with pytest.raises(grpc.RpcError) as err:
                        enrol(raw, timeout=20)
                    assert err.value.code() in CLEAR | {  # type: ignore[attr-defined]
                        grpc.StatusCode.PERMISSION_DENIED}, raw[:30]
        finally:
            good.finish()
    assert collector.proc.poll() is None
