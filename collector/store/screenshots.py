"""Screenshots, encrypted at rest (key in ``<data dir>/screenshot.key``).

Each screenshot is one file ``screenshots/<capture id>.bin`` under the data dir; the
``captures.screenshot_path`` column holds that relative path.

File format (v1): ``VGS1`` + 12-byte nonce + AES-256-GCM ciphertext and tag, with the capture's
file name as associated data (a file renamed to another capture does not decrypt). The
AES key is derived from the key file with HKDF-SHA256. Files written before v1 are Fernet
tokens and still read. AES-GCM replaced Fernet for writing because Fernet's base64 and
CBC+HMAC cost about 0.7 ms per 150 KB screenshot against 0.02 ms, which made screenshots the
ingest bottleneck (bench/sim/ingest.py, docs/benchmarks.md).
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "KEY_FILE",
    "ScreenshotError",
    "StagedScreenshots",
    "decrypt",
    "encrypt",
    "ensure_key",
    "read_screenshot",
    "recover_staged",
    "screenshot_path",
    "write_screenshot",
]

KEY_FILE = "screenshot.key"
_MAGIC = b"VGS1"


@lru_cache(maxsize=4)
def _aes(key: bytes) -> AESGCM:
    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
               info=b"vigil screenshots aes-256-gcm v1").derive(key)
    return AESGCM(raw)


def encrypt(key: bytes, rel: str, png: bytes) -> bytes:
    """The v1 file body for screenshot ``rel`` (its path relative to the data dir)."""
    nonce = os.urandom(12)
    return _MAGIC + nonce + _aes(key).encrypt(nonce, png, Path(rel).name.encode())


def decrypt(key: bytes, rel: str, body: bytes) -> bytes:
    """The PNG in a v1 file (or a pre-v1 Fernet token). Raises ValueError when it does not
    decrypt with this key."""
    if body.startswith(_MAGIC):
        from cryptography.exceptions import InvalidTag

        try:
            return _aes(key).decrypt(body[4:16], body[16:], Path(rel).name.encode())
        except InvalidTag:
            raise ValueError("does not decrypt") from None
    try:
        return Fernet(key).decrypt(body)
    except InvalidToken:
        raise ValueError("does not decrypt") from None
_SAFE = re.compile(r"^screenshots/[A-Za-z0-9._-]+\.bin$")


class ScreenshotError(Exception):
    """A screenshot cannot be read (bad path, missing file, wrong key)."""


def ensure_key(data_dir: Path) -> bytes:
    path = data_dir / KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(Fernet.generate_key())
    return path.read_bytes().strip()


def screenshot_path(capture_id: str) -> str:
    """The file a capture's screenshot lives in, relative to the data dir."""
    return f"screenshots/{re.sub(r'[^A-Za-z0-9._-]', '_', capture_id)}.bin"


class StagedScreenshots:
    """Screenshots of one ingest batch, encrypted to ``.staged`` files BEFORE the transaction
    and renamed into place only AFTER it commits, so a rolled-back batch leaves no file
    behind and a committed row never points at a half-written one.

    ``stage`` -> (transaction) -> ``publish(stored ids)`` or ``discard()``. A crash between
    commit and publish leaves ``.staged`` files that :func:`recover_staged` settles at start.
    """

    def __init__(self, data_dir: Path, key: bytes) -> None:
        self.data_dir = data_dir
        self._key = key
        self._staged: dict[str, Path] = {}

    def stage(self, capture_id: str, png: bytes) -> str:
        rel = screenshot_path(capture_id)
        tmp = (self.data_dir / rel).with_suffix(".staged")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(encrypt(self._key, rel, png))
        self._staged[capture_id] = tmp
        return rel

    def publish(self, stored_ids: set[str]) -> int:
        """Rename the stored captures' files into place; drop the rest (redeliveries)."""
        n = 0
        for cid, tmp in self._staged.items():
            if cid in stored_ids:
                os.replace(tmp, tmp.with_suffix(".bin"))
                n += 1
            else:
                tmp.unlink(missing_ok=True)
        self._staged.clear()
        return n

    def discard(self) -> None:
        for tmp in self._staged.values():
            tmp.unlink(missing_ok=True)
        self._staged.clear()


def recover_staged(data_dir: Path, stored: set[str]) -> tuple[int, int]:
    """Settle ``.staged`` files left by a crash after commit: publish those whose path a
    stored capture holds (``stored``: screenshot paths), delete the rest. (published, deleted)"""
    published = deleted = 0
    for tmp in sorted((data_dir / "screenshots").glob("*.staged")):
        rel = f"screenshots/{tmp.with_suffix('.bin').name}"
        if rel in stored:
            os.replace(tmp, tmp.with_suffix(".bin"))
            published += 1
        else:
            tmp.unlink(missing_ok=True)
            deleted += 1
    return published, deleted


def write_screenshot(data_dir: Path, capture_id: str, png: bytes, key: bytes) -> str:
    """Encrypt ``png`` to a file and return its path relative to the data dir."""
    rel = screenshot_path(capture_id)
    path = data_dir / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(encrypt(key, rel, png))
    os.replace(tmp, path)
    return rel


def read_screenshot(data_dir: str | Path, path: str) -> bytes:
    """Decrypt and return the PNG stored at ``path`` (relative, from captures.screenshot_path)."""
    if not _SAFE.match(path):
        raise ScreenshotError(f"not a screenshot path: {path!r}")
    data_dir = Path(data_dir)
    try:
        token = (data_dir / path).read_bytes()
        key = (data_dir / KEY_FILE).read_bytes().strip()
    except OSError as exc:
        raise ScreenshotError(f"cannot read screenshot {path}: {exc.strerror}") from None
    try:
        return decrypt(key, path, token)
    except ValueError:
        raise ScreenshotError(f"screenshot {path} does not decrypt with this data dir's key") \
            from None
