"""Enrolment: make a P-256 key pair here, send a CSR with a one-time token, store the result.

The private key never leaves the machine. The device id is derived from the public key
(``proto.identity.device_id_from_spki``), so the collector's answer is checked against it.
The rules public key from the answer is pinned: later bundles must verify with it.

Two modes:

* **per user** (``vigil-agent enroll`` by hand, the default): the identity goes into the
  user's own data dir, key mode 0600;
* **per device** (``vigil-agent enroll --machine``, run by the installers as root/SYSTEM):
  the identity goes into the machine-wide device folder (``agent.paths.machine_device_dir``),
  once; every desktop session's agent then uses it and reports its own user in the
  heartbeat, so a new pupil on the laptop spends no token. The folder and files are written
  by root; the certificate, CA and device.json are readable by every account (mode 0644), the
  key by root alone (mode 0600, written so from its first byte: there is no moment when a
  pupil could copy it). The session agents, running as the pupil, therefore cannot open the
  mTLS stream themselves: they go through the privileged uplink relay (``agent.relay``),
  which holds the key and names each session's user from the kernel's peer credentials. On
  Windows the installer sets the key's ACL to SYSTEM and Administrators only.
"""

from __future__ import annotations

import json
import os
import platform
import socket
from dataclasses import dataclass
from pathlib import Path

import grpc

from proto import vigil_pb2 as pb
from proto import vigil_pb2_grpc as pb_grpc
from proto.identity import KEEPALIVE_OPTIONS, device_id_from_spki

from . import __version__
from .paths import DataDir

__all__ = ["Device", "EnrolError", "enroll", "load_device", "make_key_and_csr"]


class EnrolError(Exception):
    """Enrolment failed; the message says why and what to do."""


@dataclass(frozen=True)
class Device:
    device_id: str
    collector: str
    site: str = ""
    group: str = ""


def make_key_and_csr(hostname: str) -> tuple[bytes, bytes, str]:
    """Return (private key PEM, CSR PEM, device id) for a fresh P-256 key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    device_id = device_id_from_spki(spki)
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
           .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, csr.public_bytes(serialization.Encoding.PEM), device_id


#: File modes for the identity: (key, everything else).
_USER_MODES = (0o600, 0o644)
_MACHINE_MODES = (0o600, 0o644)


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _default_collector(server: str) -> str:
    host, _, port = server.rpartition(":")
    # The documented default layout: stream port = enrolment port - 1 (7443 / 7444).
    return f"{host}:{int(port) - 1}" if port.isdigit() else server


def enroll(data: DataDir, server: str, token: str, ca_file: Path, collector: str = "",
           timeout: float = 30.0, *, machine: bool = False) -> Device:
    """Enrol this device with the collector's enrolment service at *server* (HOST:PORT).

    *machine*: write the identity into ``data.identity`` for every session of this device
    (the key readable by root alone, the rest readable, not writable, by other accounts)
    instead of privately for this user."""
    if data.shared_identity and not machine:
        raise EnrolError(f"this device is enrolled machine-wide ({data.identity}): its "
                         "sessions need no enrolment of their own; to re-enrol the device, "
                         "run vigil-agent enroll --machine as root/administrator")
    if data.device_key.exists():
        raise EnrolError(f"{data.identity} already holds an enrolled device; use another "
                         "--data-dir or remove that directory to enrol afresh")
    try:
        ca_pem = ca_file.read_bytes()
    except OSError as exc:
        raise EnrolError(f"{ca_file}: cannot read the CA certificate ({exc.strerror}); "
                         "pass the collector's ca.crt with --ca") from None
    if b"BEGIN CERTIFICATE" not in ca_pem:
        raise EnrolError(f"{ca_file}: not a PEM certificate; pass the collector's ca.crt")
    hostname = socket.gethostname()
    key_pem, csr_pem, device_id = make_key_and_csr(hostname)
    creds = grpc.ssl_channel_credentials(root_certificates=ca_pem)
    try:
        with grpc.secure_channel(server, creds, options=list(KEEPALIVE_OPTIONS)) as channel:
            resp: pb.EnrollResponse = pb_grpc.EnrollmentStub(channel).Enroll(
                pb.EnrollRequest(token=token, csr_pem=csr_pem, hostname=hostname,
                                 os=platform.system().lower(), agent_version=__version__),
                timeout=timeout)
    except grpc.RpcError as exc:
        code = exc.code().name if hasattr(exc, "code") else "ERROR"
        details = exc.details() if hasattr(exc, "details") else str(exc)
        raise EnrolError(f"enrolment at {server} failed: {code}: {details}") from None
    if resp.device_id and resp.device_id != device_id:
        raise EnrolError(f"collector answered for device {resp.device_id}, but this key is "
                         f"{device_id}; refusing to store a mismatched identity")
    key_mode, mode = _MACHINE_MODES if machine else _USER_MODES
    if machine:
        data.identity.mkdir(parents=True, exist_ok=True, mode=0o755)
        if os.name == "posix":
            os.chmod(data.identity, 0o755)  # noqa: S103 - every session reads it
    else:
        data.ensure()
        data.identity.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write(data.device_key, key_pem, key_mode)
    _write(data.device_cert, resp.client_cert_pem, mode)
    _write(data.ca_cert, resp.ca_cert_pem or ca_pem, mode)
    if resp.rules_public_key_pem:
        _write(data.rules_pub, resp.rules_public_key_pem, mode)
    device = Device(device_id, collector or _default_collector(server), resp.site, resp.group)
    # device.json last: its presence means "enrolled" (the session launcher waits for it)
    _write(data.device_json, json.dumps(device.__dict__, indent=2).encode(), mode)
    return device


def load_device(data: DataDir) -> Device | None:
    """The enrolled device recorded in *data*, or None when not enrolled."""
    try:
        raw = json.loads(data.device_json.read_text())
    except (OSError, ValueError):
        return None
    return Device(str(raw.get("device_id", "")), str(raw.get("collector", "")),
                  str(raw.get("site", "")), str(raw.get("group", "")))
