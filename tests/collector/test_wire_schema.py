"""docs/wire.md's JSON Schemas and algorithms hold for the real default bundle (the one
`vigil-collector init` publishes: the shipped library and the shipped model)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import jsonschema
import pytest

import rules
from rules.artefact import digest_of_files
from rules.scorer import DEFAULT_MODEL

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"
RULES_V2 = Path(__file__).resolve().parent / "rules_v2"


def _schema(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


@pytest.fixture(scope="module")
def default_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    private, public = rules.generate_signing_key()
    ruleset = rules.load_library(rules.DEFAULT_LIBRARY)
    model = DEFAULT_MODEL
    if not model.is_dir():  # a checkout whose model is still being trained: a stand-in
        model = tmp_path_factory.mktemp("model") / "vigil-minilm"
        model.mkdir()
        (model / "manifest.json").write_text('{"name": "vigil-minilm", "version": "t1"}')
        (model / "model.onnx").write_bytes(b"\x08\x07")
    return rules.compile_bundle(ruleset, private, 1, model=model), public


def test_default_bundle_matches_the_schemas(default_bundle: tuple[bytes, bytes]) -> None:
    data, _ = default_bundle
    env = json.loads(data)
    _schema("rules-bundle-envelope.schema.json").validate(env)
    payload = json.loads(env["payload"])
    _schema("rules-bundle-payload.schema.json").validate(payload)
    assert payload["model"] and any("weights" in r for r in payload["rules"])  # v2 covered


def test_v2_test_rules_and_a_bad_rule_against_the_payload_schema() -> None:
    private, _ = rules.generate_signing_key()
    payload = json.loads(json.loads(rules.compile_bundle(
        rules.load_library(RULES_V2), private, 3))["payload"])
    validator = _schema("rules-bundle-payload.schema.json")
    validator.validate(payload)
    bad = json.loads(json.dumps(payload))
    bad["rules"][0]["severity"] = 6
    assert not validator.is_valid(bad)


def test_signature_content_hash_and_model_digest_as_wire_md_says(
        default_bundle: tuple[bytes, bytes]) -> None:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    data, public = default_bundle
    env = json.loads(data)
    key = load_pem_public_key(public)
    key.verify(base64.b64decode(env["signature"], validate=True),  # type: ignore[union-attr]
               env["payload"].encode("utf-8"))
    payload = json.loads(env["payload"])
    canon = json.dumps(sorted(payload["rules"], key=lambda r: r["id"]), sort_keys=True,
                       separators=(",", ":"), ensure_ascii=False)
    assert hashlib.sha256(canon.encode("utf-8")).hexdigest() == payload["content_hash"]
    lines = "".join(f"{n} {h}\n" for n, h in sorted(payload["model"]["files"].items()))
    assert hashlib.sha256(lines.encode()).hexdigest() == payload["model"]["digest"] \
        == digest_of_files(payload["model"]["files"])
