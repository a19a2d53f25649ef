"""A bundle may sign a model reference (never the model's bytes); the artefact digest."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

import rules
from rules.artefact import ArtefactError, ModelRef, artefact_digest, model_ref


@pytest.fixture(scope="module")
def keys() -> tuple[bytes, bytes]:
    return rules.generate_signing_key()


WEIGHTS = b"\x00int8-weights-qx7\x01"


def artefact(folder: Path, version: str = "2026.1", weights: bytes = WEIGHTS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(weights)
    (folder / "vocab.txt").write_text("[PAD]\n[UNK]\nhello\n")
    (folder / "manifest.json").write_text(json.dumps({"name": "vigil-minilm",
                                                      "version": version}))
    return folder


def test_digest_is_over_sorted_name_and_sha256_pairs(tmp_path: Path) -> None:
    folder = artefact(tmp_path / "a")
    digest, files, size = artefact_digest(folder)
    want = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    assert files == want
    assert size == sum(p.stat().st_size for p in folder.iterdir())
    lines = "".join(f"{n} {want[n]}\n" for n in sorted(want))
    assert digest == hashlib.sha256(lines.encode()).hexdigest()
    # the same files elsewhere: the same digest; one byte changed: another
    assert artefact_digest(artefact(tmp_path / "b"))[0] == digest
    assert artefact_digest(artefact(tmp_path / "c", weights=WEIGHTS + b"!"))[0] != digest


def test_folders_that_are_not_artefacts_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ArtefactError, match="not a folder"):
        artefact_digest(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtefactError, match="empty"):
        artefact_digest(tmp_path / "empty")
    (artefact(tmp_path / "nested") / "sub").mkdir()
    with pytest.raises(ArtefactError, match="files only"):
        artefact_digest(tmp_path / "nested")


def test_model_reference_is_signed_and_round_trips(library: rules.RuleSet,
                                                   keys: tuple[bytes, bytes],
                                                   tmp_path: Path) -> None:
    folder = artefact(tmp_path / "m")
    data = rules.compile_bundle(library, keys[0], 3, model=folder)
    _, info = rules.load_bundle(data, keys[1])
    assert info.model == model_ref(folder)
    assert info.model is not None and info.model.version == "2026.1"
    assert info.model.name == "vigil-minilm" and info.model.size == artefact_digest(folder)[2]
    assert b"int8-weights-qx7" not in data  # only the reference travels in the bundle
    # a reference made earlier (a rollback re-signs the old one) signs the same payload
    again = rules.compile_bundle(library, keys[0], 4, model=info.model)
    assert rules.load_bundle(again, keys[1])[1].model == info.model


def test_bundles_without_a_model_load_unchanged(library: rules.RuleSet,
                                                keys: tuple[bytes, bytes]) -> None:
    data = rules.compile_bundle(library, keys[0], 2)
    assert "model" not in json.loads(json.loads(data)["payload"])
    assert rules.load_bundle(data, keys[1])[1].model is None


def test_a_changed_model_reference_breaks_the_signature(library: rules.RuleSet,
                                                        keys: tuple[bytes, bytes],
                                                        tmp_path: Path) -> None:
    env = json.loads(rules.compile_bundle(library, keys[0], 1, model=artefact(tmp_path / "m")))
    body = json.loads(env["payload"])
    body["model"]["files"]["model.onnx"] = "0" * 64
    env["payload"] = json.dumps(body, sort_keys=True, separators=(",", ":"))
    with pytest.raises(rules.BundleError, match="bad signature"):
        rules.load_bundle(json.dumps(env).encode(), keys[1])


@pytest.mark.parametrize("change", [
    {"digest": "f" * 64},                       # does not match the file hashes
    {"files": {"../etc/passwd": "0" * 64}},     # not a plain file name
    {"files": {}},
    {"size": -1},
    {"name": ""},
])
def test_a_signed_but_unusable_model_reference_is_refused(
        library: rules.RuleSet, keys: tuple[bytes, bytes], tmp_path: Path,
        change: dict[str, object]) -> None:
    ref = model_ref(artefact(tmp_path / "m")).to_dict() | change
    env = json.loads(rules.compile_bundle(library, keys[0], 1))
    body = json.loads(env["payload"]) | {"model": ref}
    payload = json.dumps(body, sort_keys=True)
    key = serialization.load_pem_private_key(keys[0], password=None)
    env["payload"] = payload
    env["signature"] = base64.b64encode(key.sign(payload.encode())).decode()  # type: ignore[union-attr,call-arg]
    with pytest.raises(rules.BundleError, match="unusable model"):
        rules.load_bundle(json.dumps(env).encode(), keys[1])


def test_compile_refuses_a_folder_that_is_not_an_artefact(library: rules.RuleSet,
                                                          keys: tuple[bytes, bytes],
                                                          tmp_path: Path) -> None:
    with pytest.raises(rules.BundleError, match="model artefact refused"):
        rules.compile_bundle(library, keys[0], 1, model=tmp_path / "nothing")
    assert ModelRef.from_dict(model_ref(artefact(tmp_path / "m")).to_dict()).files
