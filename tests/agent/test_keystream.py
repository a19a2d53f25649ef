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
