"""The Enrollment service (TLS-only port): token + CSR in, device certificate out."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from collector.services.estate import EstateService
from collector.store.base import DeviceExists, Store, TokenError
from collector.stream import abort
from collector.tls import CsrError, Pki
from collector.validate import safe_text
from proto import vigil_pb2 as pb
from proto import vigil_pb2_grpc as pb_grpc

__all__ = ["EnrollmentService", "TokenBucket", "peer_host"]

log = logging.getLogger(__name__)


class TokenBucket:
    """Per-key token bucket: ``rate`` tokens a second, up to ``burst``."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate, self.burst, self.clock = rate, burst, clock
        self._state: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> float:
        """0.0 if allowed, else the seconds to wait before the next token."""
        now = self.clock()
        tokens, last = self._state.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._state[key] = (tokens - 1.0, now)
            return 0.0
        self._state[key] = (tokens, now)
        if len(self._state) > 100_000:  # forget idle clients
            self._state = {k: v for k, v in self._state.items() if now - v[1] < 3600}
        return (1.0 - tokens) / self.rate if self.rate > 0 else 3600.0


def peer_host(peer: str) -> str:
    """'ipv4:127.0.0.1:5555' -> '127.0.0.1'; 'ipv6:[::1]:5555' -> '::1'."""
    _, _, rest = peer.partition(":")
    if rest.startswith("["):
        return rest[1:].split("]", 1)[0]
    return rest.rsplit(":", 1)[0] if rest else peer


class EnrollmentService(pb_grpc.EnrollmentServicer):
    def __init__(
        self,
        store: Store,
        run: Callable[..., asyncio.Future[object]],
        pki: Pki,
        rules_public_key: Path,
        bucket: TokenBucket,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.run, self.pki = run, pki
        self.estate = EstateService(store, lambda: int(self.clock() * 1000))
        self.rules_public_key = rules_public_key
        self.bucket = bucket
        self.clock = clock

    async def Enroll(
        self,
        request: pb.EnrollRequest,
        context: grpc.aio.ServicerContext[pb.EnrollRequest, pb.EnrollResponse],
    ) -> pb.EnrollResponse:
        # docs/wire.md "Status codes": every refusal carries retry-after-ms (ms or "never")
        if not isinstance(request, pb.EnrollRequest):  # a Malformed stand-in
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(request), None)
        wait = self.bucket.take(peer_host(context.peer()))
        if wait > 0:
            await abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"too many enrolment attempts; retry in {wait:.1f} s",
                        int(wait * 1000) + 1)
        if not request.token or len(request.token) > 200:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                        "token is missing or longer than 200 characters", None)
        if len(request.csr_pem) > 16_384:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                        "csr_pem is larger than 16384 bytes", None)
        try:
            await self.run(self.estate.check_token, request.token)
            issued = self.pki.issue_device_cert(request.csr_pem)
            device = await self.run(
                self.estate.enrol, request.token, issued.device_id,
                safe_text(request.hostname[:255]) or "unknown", safe_text(request.os[:64]),
                safe_text(request.agent_version[:64]), issued.serial)
        except TokenError as exc:
            log.info("enrolment refused from %s: %s", context.peer(), exc)
            await abort(context, grpc.StatusCode.PERMISSION_DENIED,
                        f"{exc}; ask a technician for a new token", None)
        except CsrError as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc), None)
        except DeviceExists as exc:
            await abort(context, grpc.StatusCode.ALREADY_EXISTS,
                        f"{exc}; an enrolment never replaces a device (make a new key to "
                        "re-enrol)", None)
        log.info("enrolled device %s (%s)", issued.device_id, safe_text(request.hostname[:255]))
        return pb.EnrollResponse(
            device_id=issued.device_id,
            client_cert_pem=issued.cert_pem,
            ca_cert_pem=self.pki.ca_cert.read_bytes(),
            site=device.site_id,  # type: ignore[attr-defined]
            group=device.group_name,  # type: ignore[attr-defined]
            rules_public_key_pem=self.rules_public_key.read_bytes(),
        )
