"""Typed keys: matching, backspace, resets, idle, and no matching at all in excluded windows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import rules
from agent.exclusion import Exclusions
from agent.keystream import KeyStream
from agent.sources import KeyEvent, WindowInfo
from agent.sources.keyboard import translate


class Clock:
    t = 100.0

    def __call__(self) -> float:
        return self.t


class Spy:
    """Wraps a real StreamMatcher and records every call (to prove 'not fed at all')."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.fed = inner, 0

    def feed(self, ch: str) -> list[Any]:
        self.fed += 1
        return list(self.inner.feed(ch))

    def backspace(self) -> None:
        self.inner.backspace()

    def reset(self) -> list[Any]:
        return list(self.inner.reset())


def make(library: Path, clock: Clock | None = None) -> tuple[KeyStream, Spy, list[tuple[str, str]]]:
    spy = Spy(rules.load_library(library).matcher("keys", context_chars=30))
    got: list[tuple[str, str]] = []
    ks = KeyStream(spy, lambda hits, w: got.extend((h.rule.id, w.title if w else "")
                                                  for h in hits),
                   Exclusions.of(["password", "sign in"], ["keepassxc"]), idle_seconds=30,
                   clock=clock or Clock())
    return ks, spy, got


def type_(ks: KeyStream, text: str) -> None:
    for ch in text:
        ks.key(KeyEvent("char", ch))


def test_phrase_typed_is_hit_with_window(library: Path) -> None:
    ks, _, got = make(library)
    ks.focus(WindowInfo("Diary", "gedit", 1))
    type_(ks, "i cut myself ")
    ks.key(KeyEvent("reset"))
    assert got == [("self_harm.test", "Diary")]


def test_backspace_corrects_and_reset_splits(library: Path) -> None:
    ks, _, got = make(library)
    ks.focus(WindowInfo("Chat", "app", 1))
    type_(ks, "nobody likes yoo")
    ks.key(KeyEvent("backspace"))
    type_(ks, "u ")
    ks.key(KeyEvent("reset"))
    type_(ks, "nobody likes")
    ks.key(KeyEvent("reset"))  # Enter between halves: no hit
    type_(ks, " you ")
    ks.key(KeyEvent("reset"))
    assert got == [("bullying.test", "Chat")]


def test_excluded_window_and_process_are_not_fed(library: Path) -> None:
    ks, spy, got = make(library)
    for w in (WindowInfo("Sign in - Google Accounts", "chromium", 1),
              WindowInfo("Vault", "KeePassXC", 2),
              WindowInfo("Form", "app", 3, password_field=True)):
        ks.focus(w)
        type_(ks, "i cut myself ")
        ks.key(KeyEvent("reset"))
    assert spy.fed == 0 and got == []
    ks.focus(WindowInfo("Notes", "gedit", 4))
    type_(ks, "cut myself ")
    assert spy.fed == len("cut myself ")


def test_idle_resets_context(library: Path) -> None:
    clock = Clock()
    ks, _, got = make(library, clock)
    ks.focus(WindowInfo("Chat", "app", 1))
    type_(ks, "nobody likes")
    clock.t += 31
    type_(ks, " you ")
    ks.tick()
    assert got == []


def test_translate_pynput_keys() -> None:
    class K:
        def __init__(self, char: str | None = None, name: str | None = None) -> None:
            self.char, self.name = char, name

    assert translate(K(char="a")) == KeyEvent("char", "a")
    assert translate(K(name="space")) == KeyEvent("char", " ")
    assert translate(K(name="backspace")) == KeyEvent("backspace")
    assert translate(K(name="enter")) == KeyEvent("reset")
    assert translate(K(name="shift")) is None
    assert translate(K(char="\x03")) is None


def test_exclusions_match_whole_words_not_substrings() -> None:
    from agent.config import DEFAULT_EXCLUDED_PROCESSES as P
    from agent.config import DEFAULT_EXCLUDED_WINDOWS as W
    from agent.config import DEFAULT_SEARCH_PAGE_TITLES as S

    ex = Exclusions.of(W, P, S)
    for title in ("Designing… a poster - Chromium", "My blog in March", "Blogging tips",
                  "login - Google Search - Chromium", "sign in help at DuckDuckGo"):
        assert ex.reason(WindowInfo(title, "chromium")) == "", title
    for title in ("Sign in - Google Accounts - Chromium", "Log-in | School Portal",
                  "KeePassXC - Passwords.kdbx", "SIGNIN"):
        assert "window title" in ex.reason(WindowInfo(title, "app")), title
    assert "process" in ex.reason(WindowInfo("Unlock", "pinentry-gtk-2"))
    assert ex.reason(WindowInfo("x", "app", password_field=True)) == "a password field has focus"
    assert ex.reason(WindowInfo("Notes", "keepassxcish")) == ""


def test_compound_text_decoder() -> None:
    from agent.sources.xtext import decode_compound_text, decode_property

    assert decode_compound_text(b"H\xe9llo \x1b%G\xf0\x9f\x98\x80\x1b%@!") == "Héllo 😀!"
    assert decode_compound_text(b"\x1b-B\xb1\xe6") == "ąć"  # ISO 8859-2 right half
    assert decode_compound_text(b"a\x1b%/1\x80\x8autf-8\x02\xc5\xb5b") == "aŵb"
    assert decode_property(b"caf\xe9", "STRING") == "café"
    assert decode_compound_text(b"\x1b?\x1b") in ("\ufffd", "\ufffd\ufffd")


def _stream(library: Path, **kw: Any) -> tuple[KeyStream, list[str], list[str]]:
    got: list[str] = []
    seen: list[str] = []
    m = rules.load_library(library).matcher("keys", context_chars=60)
    ks = KeyStream(m, lambda hits, w: got.extend(h.match for h in hits), Exclusions(),
                   on_boundary=lambda k, text, w: seen.append(text), **kw)
    ks.focus(WindowInfo("Chat", "chromium", 1))
    return ks, got, seen


def test_cursor_edits_are_matched_as_shown(library: Path) -> None:
    ks, got, seen = _stream(library)
    type_(ks, "i cut myselg")
    ks.key(KeyEvent("word_backspace"))
    type_(ks, "myself")
    ks.key(KeyEvent("reset"))
    type_(ks, "nobody likes me")
    ks.key(KeyEvent("move", "word_left", select=True))  # selects "me"
    type_(ks, "you")
    ks.key(KeyEvent("move", "home"))
    type_(ks, "but ")
    ks.key(KeyEvent("click", "1"))
    assert got == ["cut myself", "nobody likes you"]
    assert seen == ["i cut myself", "but nobody likes you"]  # the scorer saw the screen


def test_paste_short_idle_and_shortcuts(library: Path) -> None:
    clock = Clock()
    pasted = {"clipboard": "want to\\ndisappear", "primary": "nobody likes you"}
    ks, got, seen = _stream(library, clock=clock,
                            read_selection=lambda which: pasted[which].replace("\\n", " "))
    type_(ks, "i ")
    ks.key(KeyEvent("paste", "clipboard"))
    clock.t += 2.5
    assert ks.next_deadline() is not None
    ks.tick()  # short idle: released, the context goes on
    assert got == ["want to disappear"] and seen == ["i want to disappear"]
    ks.key(KeyEvent("reset"))
    assert got == ["want to disappear"]  # released once, not again at the reset
    ks.key(KeyEvent("click", "2"))  # middle click: pastes the primary selection
    ks.key(KeyEvent("reset"))
    assert got[-1] == "nobody likes you"


def test_shortcuts_translate_to_edits() -> None:
    from agent.sources.keys import Mods, key_event

    ctrl = Mods(ctrl=True)
    assert key_event(None, "a", ctrl) == KeyEvent("select_all")
    assert key_event(None, "v", Mods(ctrl=True, shift=True)) == KeyEvent("paste", "clipboard")
    assert key_event("insert", None, Mods(shift=True)) == KeyEvent("paste", "insert")
    assert key_event(None, "c", ctrl) is None
    assert key_event(None, "z", ctrl) == KeyEvent("reset")  # unknown effect: end context
    assert key_event("backspace", None, ctrl) == KeyEvent("word_backspace")
    assert key_event("left", None, Mods(shift=True)) == KeyEvent("move", "left", select=True)
    assert key_event("ctrl", None, ctrl) is None
