"""Vigil wire contract (package ``vigil.v1``): generated messages plus device identity."""

from proto import vigil_pb2, vigil_pb2_grpc
from proto.identity import KEEPALIVE_OPTIONS, MAX_MESSAGE_BYTES, device_id_from_spki

__all__ = [
    "KEEPALIVE_OPTIONS",
    "MAX_MESSAGE_BYTES",
    "device_id_from_spki",
    "vigil_pb2",
    "vigil_pb2_grpc",
]
