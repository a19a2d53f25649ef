"""Model artefacts as data: a flat folder of files named by one content digest.

A bundle never carries the model's bytes, only a signed :class:`ModelRef`: the artefact's
name, version, digest, total size and the sha256 of each file. Whoever fetches the files
checks each one against the signed sha256, so the bytes may travel over any channel.

``digest`` = sha256 over the UTF-8 lines ``"<file name> <sha256 hex>\\n"`` in sorted name
order: two folders with the same files have the same digest, whatever their path or mtimes.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ArtefactError", "ModelRef", "artefact_digest", "digest_of_files", "file_sha256",
           "model_ref", "safe_file_name"]

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_BLOCK = 1 << 20


class ArtefactError(ValueError):
    """An artefact folder or reference is unusable; the message names the file and the fix."""


def safe_file_name(name: object) -> bool:
    """True for a plain file name (no path, no leading dot): safe to join to a folder."""
    return isinstance(name, str) and bool(_NAME.match(name)) and ".." not in name


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_BLOCK):
            h.update(block)
    return h.hexdigest()


def digest_of_files(files: Mapping[str, str]) -> str:
    """The artefact digest of ``{file name: sha256}``."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(f"{name} {files[name]}\n".encode())
    return h.hexdigest()


def artefact_digest(folder: Path) -> tuple[str, dict[str, str], int]:
    """(digest, {file name: sha256}, total bytes) of every file in ``folder``.

    The folder must be flat (the wheel ships ``models/*/*``) and hold only plain names."""
    if not folder.is_dir():
        raise ArtefactError(f"{folder}: not a folder; point at the model artefact folder "
                            "(manifest.json, model.onnx, vocab.txt)")
    files: dict[str, str] = {}
    size = 0
    for p in sorted(folder.iterdir()):
        if p.is_dir():
            raise ArtefactError(f"{p}: an artefact folder holds files only; move it out")
        if not safe_file_name(p.name):
            raise ArtefactError(f"{p}: file name is not a plain name (letters, digits, . _ -); "
                                "rename or remove it")
        files[p.name] = file_sha256(p)
        size += p.stat().st_size
    if not files:
        raise ArtefactError(f"{folder}: the artefact folder is empty")
    return digest_of_files(files), files, size


@dataclass(frozen=True)
class ModelRef:
    """The signed reference to a model artefact, as carried in a rule bundle."""

    name: str
    version: str
    digest: str
    size: int
    files: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "digest": self.digest,
                "size": self.size, "files": dict(sorted(self.files.items()))}

    @classmethod
    def from_dict(cls, raw: object) -> ModelRef:
        """Parse and check a reference; raise :class:`ArtefactError` naming the field."""
        if not isinstance(raw, dict):
            raise ArtefactError("model reference is not an object")
        name, version, digest = raw.get("name"), raw.get("version"), raw.get("digest")
        size, files = raw.get("size"), raw.get("files")
        for key, value in (("name", name), ("version", version)):
            if not isinstance(value, str) or not value or len(value) > 200:
                raise ArtefactError(f"model reference field {key!r} must be a short string")
        if not isinstance(digest, str) or not _HEX64.match(digest):
            raise ArtefactError("model reference field 'digest' must be 64 hex digits")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ArtefactError("model reference field 'size' must be a whole number")
        if not isinstance(files, dict) or not files or len(files) > 64:
            raise ArtefactError("model reference field 'files' must map 1..64 names to sha256")
        for fname, sha in files.items():
            if not safe_file_name(fname):
                raise ArtefactError(f"model reference file name {fname!r} is not a plain name")
            if not isinstance(sha, str) or not _HEX64.match(sha):
                raise ArtefactError(f"model reference sha256 of {fname!r} is not 64 hex digits")
        if digest_of_files(files) != digest:
            raise ArtefactError("model reference digest does not match its file hashes")
        assert isinstance(name, str) and isinstance(version, str)
        return cls(name=name, version=version, digest=digest, size=size, files=dict(files))


def model_ref(folder: Path) -> ModelRef:
    """The reference for the artefact in ``folder`` (name and version from its manifest)."""
    digest, files, size = artefact_digest(folder)
    name, version = folder.name, digest[:12]
    try:
        man = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        man = None
    if isinstance(man, dict):
        name = str(man.get("name") or name)[:200]
        version = str(man.get("version") or version)[:200]
    return ModelRef(name=name, version=version, digest=digest, size=size, files=files)
