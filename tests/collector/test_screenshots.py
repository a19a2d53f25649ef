"""Screenshot files: AES-GCM at rest, bound to their capture, older Fernet files still read,
and files staged before a batch's commit settle after a crash."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from collector.store.screenshots import (
    ScreenshotError,
    StagedScreenshots,
    ensure_key,
    read_screenshot,
    recover_staged,
    write_screenshot,
)

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40


def test_round_trip_and_the_file_holds_no_plaintext(tmp_path: Path) -> None:
    key = ensure_key(tmp_path)
    rel = write_screenshot(tmp_path, "c-1", PNG, key)
    body = (tmp_path / rel).read_bytes()
    assert body.startswith(b"VGS1") and PNG[:64] not in body
    assert read_screenshot(tmp_path, rel) == PNG


def test_a_file_moved_to_another_capture_does_not_decrypt(tmp_path: Path) -> None:
    key = ensure_key(tmp_path)
    rel = write_screenshot(tmp_path, "c-1", PNG, key)
    other = write_screenshot(tmp_path, "c-2", b"other", key)
    (tmp_path / other).write_bytes((tmp_path / rel).read_bytes())
    with pytest.raises(ScreenshotError, match="does not decrypt"):
        read_screenshot(tmp_path, other)


def test_screenshots_written_before_v1_still_read(tmp_path: Path) -> None:
    key = ensure_key(tmp_path)
    (tmp_path / "screenshots").mkdir()
    (tmp_path / "screenshots" / "old.bin").write_bytes(Fernet(key).encrypt(PNG))
    assert read_screenshot(tmp_path, "screenshots/old.bin") == PNG


def test_staged_files_publish_only_for_stored_ids_and_recover_after_a_crash(
    tmp_path: Path
) -> None:
    key = ensure_key(tmp_path)
    st = StagedScreenshots(tmp_path, key)
    a, b = st.stage("c-a", PNG), st.stage("c-b", PNG)
    assert sorted(p.name for p in (tmp_path / "screenshots").iterdir()) == [
        "c-a.staged", "c-b.staged"]
    assert st.publish({"c-a"}) == 1
    assert sorted(p.name for p in (tmp_path / "screenshots").iterdir()) == ["c-a.bin"]
    assert read_screenshot(tmp_path, a) == PNG
    # a crash between commit and publish: the committed row's file is published at start,
    # the uncommitted one deleted
    st2 = StagedScreenshots(tmp_path, key)
    st2.stage("c-c", PNG)
    st2.stage("c-d", PNG)
    assert recover_staged(tmp_path, {"screenshots/c-c.bin", a}) == (1, 1)
    assert read_screenshot(tmp_path, "screenshots/c-c.bin") == PNG
    assert not (tmp_path / b).exists()
    assert sorted(p.name for p in (tmp_path / "screenshots").iterdir()) == ["c-a.bin",
                                                                          "c-c.bin"]
