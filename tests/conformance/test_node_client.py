"""Conformance: a second implementation (Node.js, @grpc/grpc-js) written from docs/wire.md
enrols, streams, is acked and refused, verifies a bundle and checks error statuses against a
real collector. `scripts/test` installs its pinned packages with `npm ci`."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.collector import RunningCollector, start_collector

HERE = Path(__file__).resolve().parent
NODE_DIR = HERE / "node"
ROOT = HERE.parents[1]
RULES_WIRE = ROOT / "tests" / "collector" / "rules_wire"
CHECKS = {"enrol_bad_token_permission_denied", "enrol", "config_after_heartbeat",
          "bundle_signature_and_content_hash", "tampered_bundle_refused", "capture_acked",
          "unknown_rule_rejected", "fetch_unknown_model_not_found", "replaced_stream_aborted"}


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCollector]:
    c = start_collector(tmp_path_factory.mktemp("conformance"), rules_dir=RULES_WIRE,
                        config={"ingest": {"check_rules": True}})
    try:
        yield c
    finally:
        c.stop()


def _node() -> str:
    node = shutil.which("node")
    assert node, "node (>= 20) is needed for the conformance test: apt-get install nodejs"
    if not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        # scripts/test runs this; here so that running the test alone works too
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                       cwd=NODE_DIR, check=True, capture_output=True, timeout=300)
    return node


def test_node_client_follows_the_wire_contract(collector: RunningCollector) -> None:
    node = _node()
    args = {"proto": str(ROOT / "proto" / "vigil.proto"), "enrol": collector.enrol_addr,
            "stream": collector.stream_addr, "ca": str(collector.ca_path),
            "token": collector.create_token()}
    r = subprocess.run([node, str(NODE_DIR / "client.js"), json.dumps(args)], cwd=NODE_DIR,
                       capture_output=True, text=True, timeout=180)
    results = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    failed = [x for x in results if not x["ok"]]
    assert not failed and r.returncode == 0, f"{failed}\n{r.stderr[-2000:]}"
    assert {x["check"] for x in results} == CHECKS
    (device,), = collector.query("SELECT device_id FROM captures WHERE os_user = 'pupil-node'")
    assert device.startswith("d-") and len(device) == 28
