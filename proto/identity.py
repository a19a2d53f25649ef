"""Device identity: part of the wire contract, shared by agent and collector.

A device id is derived from the device's public key, so it cannot be chosen by
the client and cannot be claimed by a second key. docs/wire.md ("Device identity") is the
normative description for other implementations.
"""

from __future__ import annotations

import base64
import hashlib

__all__ = ["KEEPALIVE_OPTIONS", "MAX_MESSAGE_BYTES", "SERVER_MIN_PING_INTERVAL_MS",
           "canonical_spki", "device_id_from_spki"]

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

#: The collector tolerates client pings no more often than this (a client that pings faster
#: is sent GOAWAY "too_many_pings"); clients must keep their keepalive interval above it.
SERVER_MIN_PING_INTERVAL_MS = 10_000

# SubjectPublicKeyInfo DER prefixes of an ECDSA P-256 key (id-ecPublicKey, prime256v1),
# with the point uncompressed (04 || X || Y) or compressed (02/03 || X).
_P256_UNCOMPRESSED = bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200")
_P256_COMPRESSED = bytes.fromhex("3039301306072a8648ce3d020106082a8648ce3d030107032200")
_P = 2**256 - 2**224 + 2**192 + 2**96 - 1
_B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B


def canonical_spki(spki_der: bytes) -> bytes:
    """``spki_der`` with a compressed P-256 point rewritten uncompressed (the form the
    collector puts in the certificate it issues); any other key is returned unchanged."""
    if len(spki_der) != len(_P256_COMPRESSED) + 33 or not spki_der.startswith(
            _P256_COMPRESSED) or spki_der[len(_P256_COMPRESSED)] not in (2, 3):
        return spki_der
    point = spki_der[len(_P256_COMPRESSED):]
    x = int.from_bytes(point[1:], "big")
    y = pow((x * x * x - 3 * x + _B) % _P, (_P + 1) // 4, _P)  # p = 3 (mod 4)
    if (y * y - (x * x * x - 3 * x + _B)) % _P:
        return spki_der  # not on the curve: leave it for the key parser to refuse
    if y & 1 != point[0] & 1:
        y = _P - y
    return _P256_UNCOMPRESSED + b"\x04" + point[1:] + y.to_bytes(32, "big")


def device_id_from_spki(spki_der: bytes) -> str:
    """Return the device id for a DER SubjectPublicKeyInfo: ``d-`` + 26 base32 chars.

    The hash is over the canonical (uncompressed-point) encoding, so a client that holds its
    key compressed computes the id the collector's certificate will carry."""
    digest = hashlib.sha256(canonical_spki(spki_der)).digest()
    return "d-" + base64.b32encode(digest).decode("ascii").lower().rstrip("=")[:26]
