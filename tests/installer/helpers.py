"""Shared helpers for the installer tests (imported by conftest and the test modules)."""

from __future__ import annotations

import datetime
import os
import re
import subprocess
from pathlib import Path

__all__ = ["ROOT", "choices_from_error", "clean_env", "run", "subcommands", "write_ca"]

ROOT = Path(__file__).resolve().parents[2]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment a fresh shell would have: no PYTHONPATH, no active virtualenv."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONSTARTUP"}}
    env.update(extra)
    return env


def run(cmd: list[str], *, cwd: Path, timeout: float = 240,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env or clean_env(), capture_output=True,
                          text=True, timeout=timeout, check=False)


_BRACES = re.compile(r"^ {2}\{([^}]*)\}(?:\s.*)?$", re.MULTILINE)


def subcommands(help_text: str) -> dict[str, str]:
    """Sub-commands listed in an argparse ``--help`` page, mapped to their help text.

    Names come from the ``{a,b,c}`` line of the positional section, so a sub-command added
    without ``help=`` (which argparse leaves out of the listing) maps to ``""``. The listing
    lines (indent 4) supply the help; a help that argparse wrapped onto the next line counts.
    """
    section = help_text.split("positional arguments:", 1)
    if len(section) < 2:
        return {}
    body = re.split(r"\n(?=\S)", section[1], maxsplit=1)[0]   # up to the next heading
    listing: dict[str, str] = {}
    lines = body.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^ {4}(\S+)(?: {2,}(\S.*))?$", line)
        if not m:
            continue
        text = m.group(2) or ""
        if not text and i + 1 < len(lines) and re.match(r"^ {6,}\S", lines[i + 1]):
            text = lines[i + 1].strip()
        listing[m.group(1)] = text.strip()
    braces = _BRACES.search(body)
    names = [n for n in braces.group(1).split(",") if n] if braces else list(listing)
    return {name: listing.get(name, "") for name in names}


def choices_from_error(stderr: str) -> list[str]:
    """Sub-command names from argparse's ``invalid choice: ... (choose from ...)`` error.

    With ``metavar=`` set, argparse's help leaves a sub-command without ``help=`` out of the
    listing entirely; its error message still names every choice.
    """
    m = re.search(r"invalid choice: .*?\(choose from ([^)]*)\)", stderr)
    if not m:
        return []
    return [c.strip().strip("'\"") for c in m.group(1).split(",") if c.strip()]


def write_ca(path: Path) -> Path:
    """A self-signed P-256 CA certificate (PEM) at *path*, as an installer's --ca input."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Vigil test CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path
