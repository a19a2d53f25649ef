"""Windows password fields through UI Automation, against a simulated UIAutomationCore that
behaves as Microsoft documents it. NOT a Windows test: nothing here has run on Windows.

Simulated (learn.microsoft.com): ``AddFocusChangedEventHandler`` is system-wide and calls the
handler on a UI Automation thread, never the thread that subscribed ("the event handler is
always called on a non-UI thread"); the subscribing thread must have called
``CoInitializeEx`` (MTA) first, and must be the one that removes the handler ("Remove event
handlers on the same thread"); ``GetCachedPropertyValueEx(id, TRUE)`` returns
``ReservedNotSupportedValue`` for a property the provider does not support, and fails
(``UIA_E_ELEMENTNOTAVAILABLE``) for an element that has gone.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.config import Config
from agent.platform import select_backends
from agent.sources import FieldInfo, KeyEvent, WindowInfo
from agent.sources.a11y_windows import (
    UIA_CONTROL_TYPE,
    UIA_IS_PASSWORD,
    UiaFieldSource,
    UiaUnavailable,
)
from agent.sources.keys import Mods, key_event
from tests.agent.test_keystream import Clock, make, type_

EDIT = 50004  # UIA_EditControlTypeId
NOT_SUPPORTED = object()


class COMError(Exception):
    pass


@dataclass
class Element:
    props: dict[int, object] = field(default_factory=dict)
    gone: bool = False


class SimUia:
    """UIAutomationCore as documented, for one client process."""

    def __init__(self, fail_subscribe: bool = False) -> None:
        self.fail_subscribe = fail_subscribe
        self.mta: set[int] = set()
        self.calls: list[tuple[str, int]] = []
        self.handler: Any = None
        self._events: queue.Queue[Element | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.handler_threads: set[int] = set()
        self.subscribed = threading.Event()

    def _log(self, name: str) -> None:
        self.calls.append((name, threading.get_ident()))

    def initialize(self) -> None:
        self._log("CoInitializeEx")
        self.mta.add(threading.get_ident())

    def subscribe(self, on_focus: Any) -> None:
        self._log("AddFocusChangedEventHandler")
        if threading.get_ident() not in self.mta:
            raise COMError("CO_E_NOTINITIALIZED")
        if self.fail_subscribe:
            raise COMError("REGDB_E_CLASSNOTREG: CUIAutomation")
        self.handler = on_focus
        self._thread = threading.Thread(target=self._deliver, name="uia-events", daemon=True)
        self._thread.start()
        self.subscribed.set()

    def _deliver(self) -> None:  # UI Automation's own thread
        while (el := self._events.get()) is not None:
            self.handler_threads.add(threading.get_ident())
            if self.handler is not None:
                self.handler(el)

    def unsubscribe(self) -> None:
        self._log("RemoveFocusChangedEventHandler")
        self.handler = None
        self._events.put(None)

    def uninitialize(self) -> None:
        self._log("CoUninitialize")
        self.mta.discard(threading.get_ident())

    def cached(self, element: Element, property_id: int) -> object:
        if element.gone:
            raise COMError("UIA_E_ELEMENTNOTAVAILABLE")
        return element.props.get(property_id, NOT_SUPPORTED)

    def not_supported(self) -> object:
        return NOT_SUPPORTED

    def focus(self, element: Element) -> None:
        self._events.put(element)


def _run(sim: SimUia, elements: list[Element]) -> tuple[list[FieldInfo], set[int], int]:
    got: list[FieldInfo] = []
    on_field_threads: set[int] = set()
    done, stop = threading.Event(), threading.Event()

    def on_field(info: FieldInfo) -> None:
        on_field_threads.add(threading.get_ident())
        got.append(info)
        if len(got) == len(elements):
            done.set()

    source = UiaFieldSource(lambda: sim)
    ident: list[int] = []

    def body() -> None:
        ident.append(threading.get_ident())
        source.run(on_field, stop, lambda: None)

    t = threading.Thread(target=body, name="password-fields")
    t.start()
    assert sim.subscribed.wait(5)
    for el in elements:
        sim.focus(el)
    assert done.wait(5), got
    stop.set()
    t.join(5)
    assert not t.is_alive()
    return got, on_field_threads, ident[0]


def test_password_boxes_of_every_toolkit_are_recognised_by_is_password() -> None:
    chromium_password = Element({UIA_IS_PASSWORD: True, UIA_CONTROL_TYPE: EDIT})
    wpf_password_box = Element({UIA_IS_PASSWORD: True, UIA_CONTROL_TYPE: EDIT})
    search_box = Element({UIA_IS_PASSWORD: False, UIA_CONTROL_TYPE: EDIT})
    got, _, _ = _run(SimUia(), [search_box, chromium_password, wpf_password_box])
    assert got == [FieldInfo(password=False, known=True, role=EDIT),
                   FieldInfo(password=True, known=True, role=EDIT),
                   FieldInfo(password=True, known=True, role=EDIT)]


def test_no_answer_from_ui_automation_is_unknown_not_not_a_password() -> None:
    unsupported = Element({UIA_CONTROL_TYPE: EDIT})  # provider does not implement IsPassword
    vanished = Element({UIA_IS_PASSWORD: True}, gone=True)
    empty = Element({UIA_IS_PASSWORD: None})  # VT_EMPTY
    got, _, _ = _run(SimUia(), [unsupported, vanished, empty])
    assert got == [FieldInfo(password=False, known=False)] * 3


def test_com_threading_follows_microsofts_rules_and_the_hook_never_waits() -> None:
    sim = SimUia()
    _, on_field_threads, source_thread = _run(
        sim, [Element({UIA_IS_PASSWORD: True, UIA_CONTROL_TYPE: EDIT})])
    names = [n for n, _ in sim.calls]
    assert names == ["CoInitializeEx", "AddFocusChangedEventHandler",
                     "RemoveFocusChangedEventHandler", "CoUninitialize"]
    assert {t for _, t in sim.calls} == {source_thread}, "COM calls on different threads"
    assert on_field_threads == {source_thread}, "on_field must run on the source's thread"
    assert source_thread not in sim.handler_threads
    assert threading.main_thread().ident not in on_field_threads | {source_thread}


def test_ui_automation_unavailable_raises_and_still_balances_com() -> None:
    sim = SimUia(fail_subscribe=True)
    with pytest.raises(UiaUnavailable, match="CUIAutomation"):
        UiaFieldSource(lambda: sim).run(lambda info: None, threading.Event())
    assert [n for n, _ in sim.calls] == ["CoInitializeEx", "AddFocusChangedEventHandler",
                                         "CoUninitialize"]


def test_a_backlog_keeps_the_newest_focus() -> None:
    source = UiaFieldSource(lambda: sim, backlog=2)
    sim = SimUia()
    got: list[FieldInfo] = []
    stop = threading.Event()
    slow = threading.Event()

    def on_field(info: FieldInfo) -> None:
        got.append(info)
        slow.wait(5)  # the agent is busy: events pile up

    t = threading.Thread(target=source.run, args=(on_field, stop))
    t.start()
    assert sim.subscribed.wait(5)
    sim.focus(Element({UIA_IS_PASSWORD: False}))
    for _ in range(5):
        sim.focus(Element({UIA_IS_PASSWORD: False}))
    last = Element({UIA_IS_PASSWORD: True})
    sim.focus(last)
    deadline = threading.Event()
    for _ in range(100):
        if source.dropped >= 4:
            break
        deadline.wait(0.02)
    slow.set()
    for _ in range(100):
        if got and got[-1].password:
            break
        deadline.wait(0.02)
    stop.set()
    t.join(5)
    assert got[-1] == FieldInfo(password=True, known=True), "the newest focus was dropped"
    assert source.dropped >= 4


def test_tab_is_a_reset_so_username_and_password_never_join(library: Path) -> None:
    # The key path already ends the context on Tab (agent/sources/keys.py _RESETS), with or
    # without Shift, and Ctrl+Tab is an unknown shortcut: also a reset.
    for mods in (Mods(), Mods(shift=True), Mods(ctrl=True)):
        assert key_event("tab", None, mods) == KeyEvent("reset")
    clock = Clock()
    ks, _, got = make(library, clock)
    ks.set_fields_live(True)
    ks.focus(WindowInfo("Sign-up - Chromium", "chrome.exe", 9))
    clock.t += 1.0
    ks.tick()
    type_(ks, "i cut")  # the username box
    ks.key(key_event("tab", None, Mods()))
    ks.field(FieldInfo(password=False, known=False))  # UI Automation gave no answer
    type_(ks, " myself")  # the password box, matched since nobody said it was one
    ks.key(KeyEvent("reset"))
    assert got == [], "the username and the next field were joined into one context"
    # ...whereas the same keys with no Tab between them are one context (the test can fail)
    type_(ks, "i cut")
    type_(ks, " myself")
    ks.key(KeyEvent("reset"))
    assert got == [("self_harm.test", "Sign-up - Chromium")]


def test_platform_gives_windows_a_ui_automation_field_source() -> None:
    b = select_backends(Config(), "windows")
    assert isinstance(b.fields, UiaFieldSource)
