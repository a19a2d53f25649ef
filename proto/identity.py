"""Device identity: part of the wire contract, shared by agent and collector.

A device id is derived from the device's public key, so it cannot be chosen by
the client and cannot be claimed by a second key.
"""

from __future__ import annotations

import base64
import hashlib

__all__ = ["KEEPALIVE_OPTIONS", "MAX_MESSAGE_BYTES", "device_id_from_spki"]

#: Largest gRPC message either side accepts (a batch with screenshots fits).
MAX_MESSAGE_BYTES = 8 * 1024 * 1024

#: Keepalive settings used by both ends so half-open connections are found.
KEEPALIVE_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    # grpcio >= 1.6x: the ping-ack deadline is this one; keepalive_timeout_ms alone no longer
    # bounds it (a half-open stream then took ~90 s to be noticed, not ~40 s).
    ("grpc.http2.ping_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
)


def device_id_from_spki(spki_der: bytes) -> str:
    """Return the device id for a DER SubjectPublicKeyInfo: ``d-`` + 26 base32 chars."""
    digest = hashlib.sha256(spki_der).digest()
    return "d-" + base64.b32encode(digest).decode("ascii").lower().rstrip("=")[:26]
