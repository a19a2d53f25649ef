"""Signed bundles: round trip, and refusal of bad signatures, hashes, versions and garbage."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key

import rules


@pytest.fixture(scope="module")
def keys() -> tuple[bytes, bytes]:
    return rules.generate_signing_key()


def test_keys_are_ed25519_pems(keys: tuple[bytes, bytes]) -> None:
    private, public = keys
    assert private.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public.startswith(b"-----BEGIN PUBLIC KEY-----")
    assert rules.generate_signing_key()[0] != private


def test_round_trip(library: rules.RuleSet, keys: tuple[bytes, bytes]) -> None:
    when = dt.datetime(2026, 11, 23, 9, 30, tzinfo=dt.UTC)
    data = rules.compile_bundle(library, keys[0], 7, now=when)
    loaded, info = rules.load_bundle(data, keys[1], min_version=7)
    assert info == rules.BundleInfo(7, library.content_hash, "2026-11-23T09:30:00Z")
    assert loaded.rules == library.rules and loaded.content_hash == library.content_hash
    assert [h.rule.id for h in loaded.scan("i want to kill myself")] == ["suicide.intent"]


def test_wrong_key_is_refused(library: rules.RuleSet, keys: tuple[bytes, bytes]) -> None:
    data = rules.compile_bundle(library, keys[0], 1)
    _, other_public = rules.generate_signing_key()
    with pytest.raises(rules.BundleError, match="bad signature"):
        rules.load_bundle(data, other_public)


def test_tampering_is_refused(library: rules.RuleSet, keys: tuple[bytes, bytes]) -> None:
    env = json.loads(rules.compile_bundle(library, keys[0], 1))
    env["payload"] = env["payload"].replace('"severity":5', '"severity":1')
    with pytest.raises(rules.BundleError, match="bad signature"):
        rules.load_bundle(json.dumps(env).encode(), keys[1])


def test_bad_content_hash_is_refused(library: rules.RuleSet, keys: tuple[bytes, bytes]) -> None:
    env = json.loads(rules.compile_bundle(library, keys[0], 1))
    body = json.loads(env["payload"])
    body["rules"] = body["rules"][1:]  # signed correctly, but the hash no longer matches
    payload = json.dumps(body, sort_keys=True)
    key = serialization.load_pem_private_key(keys[0], password=None)
    env["payload"] = payload
    env["signature"] = base64.b64encode(key.sign(payload.encode())).decode()  # type: ignore[union-attr,call-arg]
    with pytest.raises(rules.BundleError, match="content hash mismatch"):
        rules.load_bundle(json.dumps(env).encode(), keys[1])


def test_old_versions_are_refused(library: rules.RuleSet, keys: tuple[bytes, bytes]) -> None:
    data = rules.compile_bundle(library, keys[0], 4)
    assert rules.load_bundle(data, keys[1], min_version=4)[1].version == 4
    with pytest.raises(rules.BundleError, match="older than the current version 5"):
        rules.load_bundle(data, keys[1], min_version=5)


@pytest.mark.parametrize("data", [b"", b"not json", b'{"format": "x"}', b"\xff\xfe",
                                  b'{"format": "vigil-rules-bundle/1", "payload": "{}", '
                                  b'"signature": "!!"}'])
def test_garbage_is_refused(data: bytes, keys: tuple[bytes, bytes]) -> None:
    with pytest.raises(rules.BundleError, match="not a Vigil rule bundle"):
        rules.load_bundle(data, keys[1])


def test_bad_keys_and_versions(library: rules.RuleSet, keys: tuple[bytes, bytes]) -> None:
    ec = generate_private_key(SECP256R1())
    ec_pem = ec.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    with pytest.raises(rules.BundleError, match="not Ed25519"):
        rules.compile_bundle(library, ec_pem, 1)
    with pytest.raises(rules.BundleError, match="not a readable"):
        rules.compile_bundle(library, b"nonsense", 1)
    with pytest.raises(rules.BundleError, match="at least 1"):
        rules.compile_bundle(library, keys[0], 0)
    data = rules.compile_bundle(library, keys[0], 1)
    with pytest.raises(rules.BundleError, match="trusted key"):
        rules.load_bundle(data, keys[0])  # a private key is not a trusted public key


def test_csam_screenshot_stays_off_through_a_bundle(keys: tuple[bytes, bytes]) -> None:
    rule = rules.Rule("c.x", "csam", 5, ("bad thing",), screenshot=True)
    loaded, _ = rules.load_bundle(rules.compile_bundle(rules.RuleSet((rule,)), keys[0], 1),
                                  keys[1])
    assert loaded.rules[0].screenshot is False


def test_signed_payload_without_rules_is_refused(keys: tuple[bytes, bytes]) -> None:
    key = serialization.load_pem_private_key(keys[0], password=None)
    for payload in ("[]", "not json", '{"version": 1}'):
        env = {"format": "vigil-rules-bundle/1", "payload": payload,
               "signature": base64.b64encode(key.sign(payload.encode())).decode()}  # type: ignore[union-attr,call-arg]
        with pytest.raises(rules.BundleError, match="no rule list"):
            rules.load_bundle(json.dumps(env).encode(), keys[1])
