"""Password-field notices against the key stream, in every order they can arrive: the notice
after the key that moved the focus (usual), before it, later than the settle time, or never
(Enter in a text box). Plain events and a stopped clock; the real-desktop test is
tests/agent/test_password_fields.py."""

from __future__ import annotations

from pathlib import Path

from agent.keystream import KeyStream
from agent.sources import FieldInfo, KeyEvent, WindowInfo
from tests.agent.test_keystream import Clock, Spy, make, type_

TAB, ENTER = KeyEvent("reset"), KeyEvent("reset")
PASSWORD, NOT_PASSWORD = FieldInfo(password=True, role=40), FieldInfo(password=False, role=79)
CHAT = WindowInfo("Homework portal - Chromium", "chromium", 7)


def live(library: Path) -> tuple[KeyStream, Spy, list[tuple[str, str]], Clock]:
    clock = Clock()
    ks, spy, got = make(library, clock)
    ks.set_fields_live(True)
    ks.focus(CHAT)
    clock.t += 1.0
    ks.tick()  # the app said nothing on activation: the focus stayed where it was
    return ks, spy, got, clock


def test_password_after_tab_is_dropped_and_the_next_field_is_matched(library: Path) -> None:
    ks, spy, got, _ = live(library)
    type_(ks, "pupil")
    ks.key(TAB)
    fed = spy.fed
    type_(ks, "i cut myself")  # typed before the notice: held
    ks.field(PASSWORD)
    type_(ks, " again")
    assert spy.fed == fed, "password keys reached the matcher"
    assert ks.in_password_field
    ks.key(TAB)
    type_(ks, "nobody likes you")
    ks.field(NOT_PASSWORD)
    ks.key(ENTER)
    assert got == [("bullying.test", CHAT.title)]


def test_notice_before_its_tab_still_keeps_the_password_out(library: Path) -> None:
    ks, _, got, _ = live(library)
    ks.field(PASSWORD)  # the notice overtook the Tab key
    ks.key(TAB)
    type_(ks, "i cut myself")
    ks.key(TAB)
    type_(ks, "nobody likes you")
    ks.field(NOT_PASSWORD)
    ks.key(ENTER)
    assert got == [("bullying.test", CHAT.title)]


def test_late_notice_drops_what_was_typed_since_the_focus_moved(library: Path) -> None:
    ks, _, got, clock = live(library)
    type_(ks, "nobody likes you")
    ks.key(TAB)  # released here, before the password
    assert got == [("bullying.test", CHAT.title)]
    clock.t += 0.6
    ks.tick()  # no notice within the settle time
    type_(ks, "i cut myself")
    ks.field(PASSWORD)  # ... then it comes
    ks.key(TAB)
    ks.field(NOT_PASSWORD)
    ks.key(ENTER)
    assert got == [("bullying.test", CHAT.title)]


def test_no_notice_means_the_focus_stayed_and_nothing_is_lost(library: Path) -> None:
    ks, _, got, clock = live(library)
    type_(ks, "hello")
    ks.key(ENTER)  # Enter in a text box: focus stays
    type_(ks, "i cut myself")
    ks.key(ENTER)  # held keys count where they were typed
    type_(ks, "nobody likes you")
    clock.t += 0.6
    ks.tick()
    ks.key(ENTER)
    assert got == [("self_harm.test", CHAT.title), ("bullying.test", CHAT.title)]


def test_without_the_accessibility_api_keys_are_never_held(library: Path) -> None:
    ks, spy, got = make(library, Clock())
    ks.focus(CHAT)
    type_(ks, "i cut myself ")
    assert spy.fed == len("i cut myself ")
    ks.key(ENTER)
    assert got == [("self_harm.test", CHAT.title)] and ks.next_deadline() is None
