"""Removable media with real mounts: tmpfs under a temp media root, and a loop-mounted ext4."""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import rules
from agent.capture import CaptureBuilder
from agent.config import Config
from agent.monitor import Monitor
from agent.paths import DataDir
from agent.rulestate import ActiveRules
from agent.sources import MediaEvent, StopSignal
from agent.sources.media_linux import LinuxMediaSource, parse_mountinfo
from agent.spool import Spool
from proto import vigil_pb2 as pb
from tests.support.x11 import wait_for

pytestmark = pytest.mark.mount


def _can_mount() -> bool:
    return shutil.which("mount") is not None and Path("/proc/self/mountinfo").exists()


def umount(path: Path) -> None:
    subprocess.run(["umount", str(path)], check=True, timeout=30)


class Running:
    """A monitor with the Linux media source on its own thread, writing to a real spool."""

    def __init__(self, tmp: Path, library: Path, roots: tuple[str, ...]) -> None:
        data = DataDir(tmp / "data").ensure()
        self.spool = Spool(data.spool)
        self.events: list[MediaEvent] = []
        cfg = Config(rules_library=str(library), media_roots=roots)
        act = ActiveRules(data, library).load()
        self.monitor = Monitor(cfg, act, CaptureBuilder(self.spool, os_user="u",
                                                        hostname="h"))
        self.stop = StopSignal()
        src = LinuxMediaSource(roots)

        def on_event(ev: MediaEvent) -> None:
            self.events.append(ev)
            self.monitor.on_media(ev)

        self.thread = threading.Thread(target=src.run, args=(on_event, self.stop), daemon=True)
        self.thread.start()
        assert src.ready.wait(timeout=30), "the media source never read the mount table"

    def caps(self, event: str) -> list[pb.Capture]:
        return [c for c in self.spool.all() if c.media.event == event]

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.spool.close()


@pytest.fixture
def media_root(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "media"
    root.mkdir()
    yield root
    for mp in sorted(root.iterdir(), reverse=True):
        subprocess.run(["umount", "-l", str(mp)], capture_output=True, check=False)


@pytest.mark.skipif(not _can_mount(), reason="needs mount(8) and root")
def test_tmpfs_mount_and_unmount_with_files_written(tmp_path: Path, library: Path,
                                                    media_root: Path) -> None:
    run = Running(tmp_path, library, (str(media_root),))
    try:
        mp = media_root / "PUPIL_USB"
        mp.mkdir()
        # not removable: a mount outside the media roots is ignored
        other = tmp_path / "elsewhere"
        other.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(other)],
                       check=True, timeout=30)
        umount(other)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mp)], check=True,
                       timeout=30)
        [mounted] = wait_for(lambda: run.caps("mounted"), what="the mount capture")
        assert mounted.rule_id == "circumvention.any_usb" and mounted.source == pb.SOURCE_MEDIA
        assert mounted.media.mount_point == str(mp) and mounted.media.fstype == "tmpfs"
        assert mounted.media.size_bytes == 8 * 1024 * 1024 and mounted.media.label == "PUPIL_USB"
        (mp / "exam answers 2026.docx").write_bytes(b"x" * 100)
        (mp / "notes.txt").write_text("hello")
        wait_for(lambda: [c for c in run.caps("file_written")
                          if c.rule_id == "circumvention.exam_file"],
                 what="the file-name capture")
        wait_for(lambda: len({e.file_name for e in run.events
                              if e.event == "file_written"}) == 2, what="both files seen")
        umount(mp)
        [unmounted] = wait_for(lambda: run.caps("unmounted"), what="the unmount capture")
        assert unmounted.media.files_written == 2
        assert all(e.mount_point != str(other) for e in run.events)
    finally:
        run.close()


@pytest.mark.skipif(not shutil.which("mkfs.ext4"), reason="needs e2fsprogs")
def test_loop_ext4_with_label(tmp_path: Path, library: Path, media_root: Path) -> None:
    img = tmp_path / "stick.img"
    with open(img, "wb") as fh:
        fh.truncate(16 * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "SCHOOLUSB", str(img)], check=True,
                   timeout=60)
    run = Running(tmp_path, library, (str(media_root),))
    try:
        mp = media_root / "stick"
        mp.mkdir()
        r = subprocess.run(["mount", "-o", "loop", str(img), str(mp)], capture_output=True,
                           timeout=60)
        if r.returncode != 0:
            pytest.skip(f"loop mounts unavailable here: {r.stderr.decode().strip()}")
        [mounted] = wait_for(lambda: run.caps("mounted"), what="the ext4 mount capture")
        assert mounted.media.fstype == "ext4" and mounted.media.size_bytes > 0
        assert mounted.media.label in ("SCHOOLUSB", "stick")  # by-label needs udev
        (mp / "a.txt").write_text("a")
        wait_for(lambda: any(e.event == "file_written" for e in run.events))
        umount(mp)
        [unmounted] = wait_for(lambda: run.caps("unmounted"), what="the unmount capture")
        assert unmounted.media.files_written == 1
    finally:
        run.close()


def test_parse_mountinfo_escapes_and_fields() -> None:
    text = ("36 35 98:0 / /media/My\\040Stick rw,noatime master:1 - vfat /dev/sdb1 rw\n"
            "37 35 0:5 / /proc rw - proc proc rw\n")
    m = parse_mountinfo(text)
    assert m["/media/My Stick"].fstype == "vfat" and m["/media/My Stick"].source == "/dev/sdb1"
    assert set(m) == {"/media/My Stick", "/proc"}


def test_mount_rules_come_from_the_rule_set(library: Path) -> None:
    assert [r.id for r in rules.load_library(library).mount_rules()] == [
        "circumvention.any_usb"]


@pytest.mark.skipif(not (shutil.which("fusefat") and shutil.which("mkfs.vfat")),
                    reason="needs fusefat and dosfstools")
def test_vfat_image_through_fusefat(tmp_path: Path, library: Path, media_root: Path) -> None:
    img = tmp_path / "card.img"
    with open(img, "wb") as fh:
        fh.truncate(8 * 1024 * 1024)
    subprocess.run(["mkfs.vfat", "-n", "SDCARD", str(img)], check=True, timeout=60,
                   capture_output=True)
    run = Running(tmp_path, library, (str(media_root),))
    try:
        mp = media_root / "SDCARD"
        mp.mkdir()
        r = subprocess.run(["fusefat", "-o", "rw+", str(img), str(mp)], capture_output=True,
                           timeout=60)
        if r.returncode != 0:
            pytest.skip(f"FUSE unavailable here: {r.stderr.decode().strip()}")
        [mounted] = wait_for(lambda: run.caps("mounted"), what="the vfat mount capture")
        assert mounted.media.fstype.startswith("fuse") and mounted.media.label == "SDCARD"
        (mp / "exam answers.txt").write_text("answers")
        wait_for(lambda: any(c.rule_id == "circumvention.exam_file"
                             for c in run.caps("file_written")), what="the file-name hit")
        umount(mp)
        [unmounted] = wait_for(lambda: run.caps("unmounted"), what="the unmount capture")
        assert unmounted.media.files_written == 1
    finally:
        run.close()
