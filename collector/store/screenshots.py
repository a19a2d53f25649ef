"""Screenshots, encrypted at rest (Fernet, key in ``<data dir>/screenshot.key``).

Each screenshot is one file ``screenshots/<capture id>.bin`` under the data dir; the
``captures.screenshot_path`` column holds that relative path.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cryptography.fernet import Fernet

__all__ = ["KEY_FILE", "ScreenshotError", "ensure_key", "read_screenshot", "write_screenshot"]

KEY_FILE = "screenshot.key"
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


def write_screenshot(data_dir: Path, capture_id: str, png: bytes, key: bytes) -> str:
    """Encrypt ``png`` to a file and return its path relative to the data dir."""
    rel = f"screenshots/{re.sub(r'[^A-Za-z0-9._-]', '_', capture_id)}.bin"
    path = data_dir / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(Fernet(key).encrypt(png))
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
        return Fernet(key).decrypt(token)
    except Exception:
        raise ScreenshotError(f"screenshot {path} does not decrypt with this data dir's key") \
            from None
