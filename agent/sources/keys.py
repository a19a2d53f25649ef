"""From one key press (a named key or a character, plus modifiers) to a :class:`KeyEvent`.

Pure and shared by every keyboard backend, so a shortcut means the same on X11, Windows and
macOS. The rule is: text only when no Ctrl/Alt/Super is held; the editing keys and the
common editing shortcuts become editing operations the key stream models; copy is nothing;
paste reads the selection; any other shortcut ends the context (its effect on the text is
unknown, so what was typed before it is released rather than silently joined to what follows).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import KeyEvent

__all__ = ["Mods", "key_event"]

_MOVES = {"left": "left", "right": "right", "home": "home", "end": "end"}
_RESETS = frozenset({"enter", "esc", "tab", "up", "down", "page_up", "page_down"})
_IGNORED = frozenset({"insert"})  # overwrite toggle: the text does not change
_MODIFIERS = frozenset({"shift", "ctrl", "alt", "cmd", "super", "caps", "num"})
_COPY = frozenset({"c", "insert"})  # ctrl+c, ctrl+shift+c (terminals), ctrl+Insert


@dataclass(frozen=True)
class Mods:
    """Modifiers held at the moment of the press."""

    shift: bool = False
    ctrl: bool = False
    alt: bool = False
    super: bool = False


def key_event(name: str | None, char: str | None, mods: Mods) -> KeyEvent | None:
    """*name* is a named key (pynput's names: ``backspace``, ``left``, ``enter``...) or None;
    *char* the character the key produces (None for a named key). None: no effect."""
    if mods.ctrl or mods.alt or mods.super:
        return _shortcut(name, char, mods)
    if name is None:
        if not char or not char.isprintable():
            return None
        return KeyEvent("char", char)
    if name == "space":
        return KeyEvent("char", " ")
    if name == "backspace":
        return KeyEvent("backspace")
    if name == "delete":
        return KeyEvent("delete")
    if name in _MOVES:
        return KeyEvent("move", _MOVES[name], select=mods.shift)
    if name == "insert" and mods.shift:
        return KeyEvent("paste", "insert")
    if name in _RESETS:
        return KeyEvent("reset")
    return None  # modifiers, function keys, media keys, Insert


def _shortcut(name: str | None, char: str | None, mods: Mods) -> KeyEvent | None:
    if mods.ctrl and not (mods.alt or mods.super):
        if name == "backspace":
            return KeyEvent("word_backspace")
        if name == "delete":
            return KeyEvent("word_delete")
        if name in ("left", "right"):
            return KeyEvent("move", f"word_{name}", select=mods.shift)
        letter = (char or "").lower() if name is None else name
        if letter in _COPY:
            return None  # copying does not change the text
        if letter == "a":
            return KeyEvent("select_all")
        if letter == "x":
            return KeyEvent("cut")
        if letter == "v":  # ctrl+v, and ctrl+shift+v (terminals, "paste as plain text")
            return KeyEvent("paste", "clipboard")
    if (name is None and not char) or (name is not None and name.split("_")[0] in _MODIFIERS):
        return None
    return KeyEvent("reset")
