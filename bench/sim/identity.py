"""Device identities for simulated agents.

Two ways to get one, both producing a real P-256 key and a real client certificate signed by
the collector's CA, with the device row in the collector's store:

* :func:`enrol_over_wire` does exactly what an agent does: key, CSR, ``Enrollment.Enroll``
  over TLS. It is what we time to report enrolment throughput.
* :func:`mint` is the fast path for 10,000 agents: the same CA code the collector uses
  (``collector.tls.Pki.issue_device_cert``) signs the CSR in this process, and the device row
  is written through the store's own ``enrol_device`` (token check, audit row), so the
  collector cannot tell the two apart when the device connects.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["Identity", "enrol_over_wire", "mint"]


@dataclass(frozen=True)
class Identity:
    device_id: str
    key_pem: bytes
    cert_pem: bytes
    hostname: str


def _key_and_csr() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vigil-agent")]))
           .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, csr.public_bytes(serialization.Encoding.PEM)


def mint(data_dir: Path, n: int, *, start: int = 0, site: str = "default",
         group: str = "secondary", store_url: str | None = None
         ) -> tuple[list[Identity], dict[str, float]]:
    """Make ``n`` enrolled device identities directly from the collector's CA and store.

    Safe while the collector runs (the store is SQLite in WAL mode, or the PostgreSQL
    database at ``store_url``). Returns the identities and timings (seconds spent on
    keys+CSRs, on signing, on store writes).
    """
    from collector.store.sqlite import open_store
    from collector.tls import Pki

    pki = Pki.in_dir(data_dir)
    store: Any
    if store_url:
        from collector.store.postgres import open_postgres_store

        store = open_postgres_store(store_url, data_dir, migrate=False)
    else:
        store = open_store(data_dir / "vigil.db", data_dir, 10_000, migrate=False)
    now = int(time.time() * 1000)
    t_keys = t_sign = t_store = 0.0
    out: list[Identity] = []
    try:
        _, secret = store.create_token(site, group, n, now + 86_400_000, "bench", now)
        for i in range(start, start + n):
            t0 = time.perf_counter()
            key_pem, csr_pem = _key_and_csr()
            t1 = time.perf_counter()
            issued = pki.issue_device_cert(csr_pem)
            t2 = time.perf_counter()
            host = f"sim-{i:05d}"
            store.enrol_device(secret, issued.device_id, host, "linux", "sim-0.1",
                               issued.serial, now)
            t3 = time.perf_counter()
            t_keys, t_sign, t_store = t_keys + t1 - t0, t_sign + t2 - t1, t_store + t3 - t2
            out.append(Identity(issued.device_id, key_pem, issued.cert_pem, host))
    finally:
        store.close()
    return out, {"keys_s": t_keys, "sign_s": t_sign, "store_s": t_store}


async def enrol_over_wire(enrol_addr: str, stream_addr: str, ca_pem: bytes, token: str, n: int,
                          concurrency: int = 32) -> tuple[list[Identity], dict[str, Any]]:
    """Enrol ``n`` agents through the real ``Enrollment.Enroll`` RPC, ``concurrency`` at a
    time. Keys and CSRs are made before the clock starts (an agent makes them offline)."""
    from tests.support.agent_client import AgentClient

    clients = [AgentClient(enrol_addr, stream_addr, ca_pem, f"wire-{i:05d}") for i in range(n)]
    csrs = [c.csr_pem() for c in clients]
    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    errors: list[str] = []

    async def one(c: AgentClient, csr: bytes) -> None:
        async with sem:
            t = time.perf_counter()
            try:
                await c.enrol(token, csr)
            except Exception as exc:  # counted and reported, never hidden
                errors.append(str(exc)[:200])
                return
            latencies.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(c, csr) for c, csr in zip(clients, csrs, strict=True)))
    elapsed = time.perf_counter() - t0
    ids = [Identity(c.device_id, c.key_pem, c.cert_pem, c.hostname)
           for c in clients if c.cert_pem is not None]
    latencies.sort()
    return ids, {"n": n, "enrolled": len(ids), "errors": len(errors),
                 "first_errors": errors[:3], "seconds": elapsed,
                 "per_s": len(ids) / elapsed if elapsed else 0.0,
                 "p50_ms": latencies[len(latencies) // 2] * 1000 if latencies else None,
                 "concurrency": concurrency}
