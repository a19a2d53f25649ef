"""The collector's certificate authority: CA, server certificate, device certificates.

Everything here uses ``cryptography`` only (no OpenSSL command line). Keys are ECDSA P-256,
which gRPC's BoringSSL accepts on every platform.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from proto.identity import device_id_from_spki

__all__ = [
    "CsrError",
    "IssuedCert",
    "Pki",
    "device_id_from_cert_pem",
    "ensure_pki",
    "spki_der",
]

_CA_YEARS = 20
_SERVER_DAYS = 825
_DEVICE_DAYS = 3 * 365


class CsrError(ValueError):
    """The certificate signing request cannot be used (the message says why)."""


@dataclass(frozen=True)
class IssuedCert:
    device_id: str
    cert_pem: bytes
    serial: str


@dataclass(frozen=True)
class Pki:
    """Paths of the PKI files in a data dir."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path

    @classmethod
    def in_dir(cls, data_dir: Path) -> Pki:
        d = data_dir / "pki"
        return cls(d / "ca.pem", d / "ca-key.pem", d / "server.pem", d / "server-key.pem")

    def issue_device_cert(self, csr_pem: bytes, now: dt.datetime | None = None) -> IssuedCert:
        """Check the CSR (P-256, valid self-signature) and sign a client certificate for it."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise CsrError(f"csr_pem is not a PEM PKCS#10 request: {exc}") from None
        if not csr.is_signature_valid:
            raise CsrError("csr_pem signature does not verify (no proof of key possession)")
        pub = csr.public_key()
        if not isinstance(pub, ec.EllipticCurvePublicKey) or pub.curve.name != "secp256r1":
            raise CsrError("device key must be ECDSA P-256 (secp256r1)")
        # The certificate carries the key uncompressed whatever the CSR used; the id is over
        # that canonical form, which is what device_id_from_spki computes for either form.
        device_id = device_id_from_spki(spki_der(pub))
        ca_cert = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
        ca_key = _load_key(self.ca_key)
        now = now or dt.datetime.now(dt.UTC)
        serial = x509.random_serial_number()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
            .issuer_name(ca_cert.subject)
            .public_key(pub)
            .serial_number(serial)
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=_DEVICE_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        return IssuedCert(device_id, cert.public_bytes(serialization.Encoding.PEM), f"{serial:x}")


def spki_der(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def device_id_from_cert_pem(cert_pem: bytes) -> tuple[str, str]:
    """Return (device id, serial hex) for a peer certificate."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    pub = cert.public_key()
    der = pub.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return device_id_from_spki(der), f"{cert.serial_number:x}"


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _server_sans(cert: x509.Certificate) -> set[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    names = set(ext.get_values_for_type(x509.DNSName))
    names |= {str(ip) for ip in ext.get_values_for_type(x509.IPAddress)}
    return names


def ensure_pki(data_dir: Path, hostnames: list[str], site_name: str = "Vigil") -> tuple[Pki, bool]:
    """Create the CA and server certificate if missing; re-issue the server cert when new
    host names are asked for. Returns (paths, created_anything)."""
    pki = Pki.in_dir(data_dir)
    created = False
    now = dt.datetime.now(dt.UTC)
    if not pki.ca_cert.exists() or not pki.ca_key.exists():
        ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Vigil"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"Vigil collector CA ({site_name})"[:64]),
            ]
        )
        ca = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365 * _CA_YEARS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write_private(pki.ca_key, _key_pem(ca_key))
        pki.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        pki.server_cert.unlink(missing_ok=True)
        created = True
    wanted = {"localhost", "127.0.0.1", *hostnames}
    if pki.server_cert.exists() and pki.server_key.exists():
        current = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
        if wanted <= _server_sans(current):
            return pki, created
        wanted |= _server_sans(current)
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    ca_key = _load_key(pki.ca_key)
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for h in sorted(wanted):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    dns_first = sorted(h for h in wanted if not _is_ip(h))
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (dns_first or ["localhost"])[0])])
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(pki.server_key, _key_pem(key))
    pki.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return pki, True


def _is_ip(h: str) -> bool:
    try:
        ipaddress.ip_address(h)
    except ValueError:
        return False
    return True
