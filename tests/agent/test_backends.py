"""Windows/macOS backends: the logic around the OS calls, with the OS faked behind its seam.
These backends have NOT run on a real Windows or macOS machine (they cannot run here)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from agent.backends import macos, windows
from agent.backends.polling import PollingMediaSource, PollingWindowSource, Volume
from agent.config import Config
from agent.platform import backend_name, select_backends
from agent.sources import MediaEvent, WindowInfo


class FakeWin32:
    def __init__(self) -> None:
        self.hwnd, self.titles = 0, {0: ""}
        self.control: tuple[str, int] = ("", 0)
        self.mask = 0b100  # C:
        self.types = {"C:\\": 3, "E:\\": windows.DRIVE_REMOVABLE}

    def foreground(self) -> int:
        return self.hwnd

    def title(self, hwnd: int) -> str:
        return self.titles[hwnd]

    def pid(self, hwnd: int) -> int:
        return 0

    def process_name(self, pid: int) -> str:
        return ""

    def focused_control(self, hwnd: int) -> tuple[str, int]:
        return self.control

    def drives(self) -> int:
        return self.mask

    def drive_type(self, root: str) -> int:
        return self.types.get(root, 1)

    def bus_type(self, root: str) -> int | None:
        return 0x11  # NVMe

    def volume(self, root: str) -> tuple[str, str, int, int] | None:
        return "KINGSTON", "FAT32", 8_000_000_000, 0


def test_windows_window_and_password_field() -> None:
    api = FakeWin32()
    api.hwnd, api.titles = 7, {7: "Sign-up form - Edge"}
    assert windows.read_window(api) == WindowInfo("Sign-up form - Edge", "", 7, False)
    api.control = ("Edit", windows.ES_PASSWORD | 0x50000000)
    assert windows.read_window(api).password_field is True  # type: ignore[union-attr]
    api.control = ("Chrome_RenderWidgetHostHWND", 0)  # a browser never exposes ES_PASSWORD
    assert windows.read_window(api).password_field is False  # type: ignore[union-attr]
    api.hwnd = 0
    assert windows.read_window(api) is None


def test_windows_removable_drives() -> None:
    api = FakeWin32()
    assert windows.removable_volumes(api) == {}
    api.mask |= 1 << 4  # E:
    assert windows.removable_volumes(api) == {
        "E:\\": Volume("E:\\", "KINGSTON", "FAT32", 8_000_000_000)}


class FakeCocoa:
    """Only what read_window and removable_volumes use (the full fake is in
    test_backends_macos.py)."""

    def __init__(self) -> None:
        self.vols = [macos.MacVolume("/Volumes/Macintosh HD", is_symlink=True)]

    def focused(self, pid: int) -> macos.Focused:
        return macos.Focused(title="how to unblock games - Google Search")

    def volumes(self) -> list[macos.MacVolume]:
        return self.vols


def test_macos_window_and_volumes() -> None:
    api = FakeCocoa()
    info, _ = macos.read_window(api, 501, "Safari", trusted=True)  # type: ignore[arg-type]
    assert info == WindowInfo("how to unblock games - Google Search", "Safari", 501)
    assert macos.removable_volumes(api) == {}  # type: ignore[arg-type]
    api.vols.append(macos.MacVolume("/Volumes/USB STICK", removable=True, ejectable=True,
                                    internal=False, local=True, protocol="USB",
                                    label="USB STICK", fstype="MS-DOS (FAT32)", size=1000))
    assert macos.removable_volumes(api) == {  # type: ignore[arg-type]
        "/Volumes/USB STICK": Volume("/Volumes/USB STICK", "USB STICK", "MS-DOS (FAT32)", 1000)}


def test_polling_window_reports_changes_once() -> None:
    seq = iter([WindowInfo("a"), WindowInfo("a"), WindowInfo("b"), None, WindowInfo("b")])
    stop, got = threading.Event(), []

    def read() -> WindowInfo | None:
        try:
            return next(seq)
        except StopIteration:
            stop.set()
            return None

    PollingWindowSource(read, interval=0).run(got.append, stop)
    assert [w.title for w in got] == ["a", "b"]


def test_polling_media_mount_files_unmount() -> None:
    snapshots = [{}, {"E:\\": Volume("E:\\", "STICK", "FAT32", 9)},
                 {"E:\\": Volume("E:\\", "STICK", "FAT32", 9)}, {}]
    events, stopped, _ = _media_run(snapshots, {2: [
        ("E:\\", "E:\\exam answers.docx"),
        ("E:\\", "E:\\exam answers.docx"),  # same file twice counts once
        ("E:\\", "E:\\b.txt")]})
    assert [e.event for e in events] == ["mounted", "file_written", "file_written", "unmounted"]
    assert events[1] == MediaEvent("file_written", "E:\\", file_name="exam answers.docx")
    assert events[-1].files_written == 2 and stopped == ["E:\\"]


def test_platform_switch_is_the_only_chooser_and_lazy() -> None:
    assert backend_name("win32", {}) == "windows"
    assert backend_name("darwin", {}) == "macos"
    assert backend_name("linux", {"DISPLAY": ":5"}) == "x11"
    assert backend_name("linux", {"WAYLAND_DISPLAY": "wayland-0"}) == "wayland"
    # building the Windows/macOS backends touches no OS library until they run
    b = select_backends(Config(), "windows")
    assert isinstance(b.window, windows.WindowsWindowSource)
    m = select_backends(Config(), "macos")
    assert isinstance(m.media, macos.MacMediaSource)
    w = select_backends(Config(), "wayland")
    assert w.window is None and w.keys is None and w.media is not None


def _media_run(snapshots: list[dict[str, Volume]], writes: dict[int, list[tuple[str, str]]]
               ) -> tuple[list[MediaEvent], list[str], dict[str, Callable[[str], None]]]:
    """Run PollingMediaSource over *snapshots*; at poll i, write the files in writes[i]."""
    stop, events = threading.Event(), []
    writers: dict[str, Callable[[str], None]] = {}
    stopped: list[str] = []
    calls = iter(range(100))

    def list_volumes() -> dict[str, Volume]:
        i = next(calls)
        for mp, path in writes.get(i, []):
            writers[mp](path)
        if i >= len(snapshots) - 1:
            stop.set()
        return snapshots[min(i, len(snapshots) - 1)]

    def watch(mp: str, on_file: Callable[[str], None]) -> Callable[[], None]:
        writers[mp] = on_file
        return lambda: stopped.append(mp)

    PollingMediaSource(list_volumes, interval=0, watch=watch).run(events.append, stop)
    return events, stopped, writers


def test_polling_media_watches_volumes_present_at_start() -> None:
    stick = {"E:\\": Volume("E:\\", "STICK", "FAT32", 9)}
    events, stopped, _ = _media_run([stick, stick, {}], {1: [("E:\\", "E:\\copied.docx")]})
    assert [e.event for e in events] == ["file_written", "unmounted"]  # not re-reported
    assert events[-1].files_written == 1 and stopped == ["E:\\"]


def test_polling_media_a_different_stick_at_the_same_letter_keeps_its_watcher() -> None:
    a = {"E:\\": Volume("E:\\", "ALICE", "FAT32", 9, "1111")}
    b = {"E:\\": Volume("E:\\", "BOB", "exFAT", 16, "2222")}
    events, stopped, _ = _media_run([{}, a, b, b, {}], {3: [("E:\\", "E:\\bob.txt")]})
    assert [(e.event, e.label) for e in events] == [
        ("mounted", "ALICE"), ("unmounted", "ALICE"), ("mounted", "BOB"), ("file_written", ""),
        ("unmounted", "BOB")]
    assert events[-1].files_written == 1  # BOB's watcher survived the swap
    assert stopped == ["E:\\", "E:\\"]


def test_polling_window_reports_every_exception_and_gives_up_when_it_persists() -> None:
    import ctypes

    import pytest

    seq: list[object] = [ctypes.ArgumentError("argument 1: wrong type"), WindowInfo("a")]
    got: list[WindowInfo] = []
    stop = threading.Event()

    def read() -> WindowInfo | None:
        item = seq.pop(0) if seq else None
        if item is None:
            stop.set()
            return None
        if isinstance(item, Exception):
            raise item
        return item  # type: ignore[return-value]

    PollingWindowSource(read, interval=0).run(got.append, stop)
    assert [w.title for w in got] == ["a"]

    def broken() -> WindowInfo | None:
        raise KeyError("pyobjc said no")

    with pytest.raises(RuntimeError, match="failed 3 times in a row: KeyError"):
        PollingWindowSource(broken, interval=0, max_failures=3).run(got.append,
                                                                    threading.Event())
