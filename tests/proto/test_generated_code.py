"""The committed protobuf code must be exactly what scripts/gen-proto produces."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ["vigil_pb2.py", "vigil_pb2.pyi", "vigil_pb2_grpc.py", "vigil_pb2_grpc.pyi"]


def test_regenerating_proto_changes_nothing(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHON=sys.executable)
    subprocess.run(
        [str(ROOT / "scripts" / "gen-proto"), str(tmp_path)],
        check=True, env=env, cwd=ROOT, capture_output=True,
    )
    for name in GENERATED:
        fresh = (tmp_path / "proto" / name).read_text()
        committed = (ROOT / "proto" / name).read_text()
        assert fresh == committed, f"proto/{name} is stale: run scripts/gen-proto and commit"


def test_device_id_is_derived_from_the_public_key_only() -> None:
    from proto.identity import device_id_from_spki

    a = device_id_from_spki(b"key-a")
    assert a == device_id_from_spki(b"key-a")
    assert a != device_id_from_spki(b"key-b")
    assert a.startswith("d-") and len(a) == 28


def test_generated_code_is_importable_without_side_effects() -> None:
    from proto import vigil_pb2

    msg = vigil_pb2.AgentMessage(heartbeat=vigil_pb2.Heartbeat(spool_depth=3))
    assert vigil_pb2.AgentMessage.FromString(msg.SerializeToString()).heartbeat.spool_depth == 3
