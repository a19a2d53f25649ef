"""Signed rule bundles: one versioned, hashed, Ed25519-signed file per published library.

Layout (UTF-8 JSON)::

    {"format": "vigil-rules-bundle/1", "payload": "<JSON text>", "signature": "<base64>"}

``payload`` is the exact signed text: ``{"version", "created_at", "content_hash", "rules"}``
and, optionally, ``"model": {"name", "version", "digest", "size", "files"}`` (a
:class:`rules.artefact.ModelRef`). Only the model's reference is signed, never its bytes: the
agent fetches the files separately and checks each against the signed sha256. A bundle
without ``"model"`` (every bundle before models were distributed) loads with ``model=None``.
Loading verifies the signature first, then recomputes the content hash from the rules, then
checks the version against ``min_version`` (versions only increase).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .artefact import ArtefactError, ModelRef, model_ref
from .model import RuleError
from .ruleset import RuleSet, rule_to_dict
from .validate import rule_from_dict

__all__ = ["BundleError", "BundleInfo", "compile_bundle", "generate_signing_key", "load_bundle"]

FORMAT = "vigil-rules-bundle/1"


class BundleError(ValueError):
    """A bundle was refused (bad signature, bad hash, too old, malformed), with the reason."""


@dataclass(frozen=True)
class BundleInfo:
    """What a verified bundle says about itself. ``created_at`` is ISO 8601 UTC (``...Z``)."""

    version: int
    content_hash: str
    created_at: str
    #: The signed model reference, or None when the bundle names no model.
    model: ModelRef | None = None


def generate_signing_key() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair as (private PKCS#8 PEM, public SubjectPublicKeyInfo PEM)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def compile_bundle(
    ruleset: RuleSet, private_pem: bytes, version: int, *, now: dt.datetime | None = None,
    model: Path | ModelRef | None = None,
) -> bytes:
    """Sign ``ruleset`` as bundle ``version`` (a positive integer) with the private PEM.

    ``model`` is an artefact folder (its reference is computed) or a reference already made
    (a rollback re-signs the old one); None signs a bundle that names no model."""
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise BundleError(f"version {version!r} must be a whole number of at least 1")
    try:
        key = serialization.load_pem_private_key(private_pem, password=None)
    except (ValueError, TypeError) as e:
        raise BundleError(
            f"signing key is not a readable unencrypted PEM private key ({e})"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError("signing key is not Ed25519: make one with `vigil-rules keygen`")
    try:
        ref = model_ref(model) if isinstance(model, Path) else model
    except ArtefactError as e:
        raise BundleError(f"model artefact refused: {e}") from None
    when = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    body: dict[str, Any] = {
        "version": version,
        "created_at": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "content_hash": ruleset.content_hash,
        "rules": [rule_to_dict(r) for r in ruleset.rules],
    }
    if ref is not None:
        body["model"] = ref.to_dict()
    payload = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    signature = key.sign(payload.encode("utf-8"))
    envelope = {"format": FORMAT, "payload": payload,
                "signature": base64.b64encode(signature).decode("ascii")}
    return json.dumps(envelope, ensure_ascii=False).encode("utf-8")


def _public_key(public_pem: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(public_pem)
    except (ValueError, TypeError) as e:
        raise BundleError(f"trusted key is not a readable PEM public key ({e})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError("trusted key is not an Ed25519 public key")
    return key


def load_bundle(
    data: bytes, public_pem: bytes, min_version: int = 0
) -> tuple[RuleSet, BundleInfo]:
    """Verify and open a bundle; raise :class:`BundleError` saying why it was refused."""
    key = _public_key(public_pem)
    try:
        env = json.loads(data.decode("utf-8"))
        payload, sig_b64 = env["payload"], env["signature"]
        if env.get("format") != FORMAT or not isinstance(payload, str):
            raise KeyError("format")
        signature = base64.b64decode(sig_b64, validate=True)
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, binascii.Error):
        raise BundleError(f"not a Vigil rule bundle (expected {FORMAT} JSON): "
                          "recompile it with `vigil-rules compile`") from None
    try:
        key.verify(signature, payload.encode("utf-8"))
    except InvalidSignature:
        raise BundleError("bad signature: the bundle was not signed by the trusted rule key "
                          "or was altered after signing; refusing it") from None
    try:
        body: Any = json.loads(payload)
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("rules"), list):
        raise BundleError("signed payload holds no rule list: recompile the bundle with "
                          "`vigil-rules compile`")
    version, claimed = body.get("version"), body.get("content_hash")
    try:
        rules = tuple(rule_from_dict(d, f"<bundle v{version}>") for d in body["rules"])
    except (RuleError, KeyError, TypeError, AttributeError) as e:
        raise BundleError(f"bundle holds an invalid rule: {e}") from None
    ruleset = RuleSet(rules)
    if ruleset.content_hash != claimed:
        raise BundleError(f"content hash mismatch: bundle says {claimed}, rules hash to "
                          f"{ruleset.content_hash}; refusing it")
    if not isinstance(version, int) or version < min_version:
        raise BundleError(f"bundle version {version} is older than the current version "
                          f"{min_version}: versions only increase; publish a newer one")
    model: ModelRef | None = None
    if body.get("model") is not None:
        try:
            model = ModelRef.from_dict(body["model"])
        except ArtefactError as e:
            raise BundleError(f"bundle names an unusable model: {e}; republish it with "
                              "`vigil-collector rules publish`") from None
    return ruleset, BundleInfo(version, ruleset.content_hash, str(body.get("created_at")),
                               model)
