"""Key presses and mouse clicks on X11 through the RECORD extension, with python-xlib.

One RECORD context takes the device events (key and button presses) of every client, and
the core ``ChangeKeyboardMapping`` requests. The requests matter: ``xdotool`` (and input
methods) type a character that is not on the keyboard by binding its keysym to a spare
keycode, pressing it, and unbinding it again. RECORD delivers the request, the press and the
second request in server order, so the keymap kept here is exactly the one the press was made
with; asking the server afterwards (as pynput does, from a table it read at start) finds the
key unbound again and loses the letter.

Keysyms become characters here (Latin-1 and Unicode keysyms directly, the legacy ranges
through pynput's keysym table when it is installed); dead keys compose with the next letter.
The RECORD callback only parses 32-byte events and calls ``on_key`` (a queue put). The
source is ready once the server says recording has started (RECORD's StartOfData), not when
the request is sent: a key typed after ``ready`` is never missed.
Nothing happens at import time; Xlib is imported in :meth:`X11InputSource.run`.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import select
import struct
import threading
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any

from . import KeyEvent, stop_fd
from .keys import Mods, key_event

__all__ = ["Keymap", "X11InputSource", "keysym_char"]

log = logging.getLogger(__name__)

_SHIFT, _LOCK, _CTRL, _MOD1, _MOD2, _MOD4, _MOD5 = 1, 2, 4, 8, 16, 64, 128
_KEY_PRESS, _BUTTON_PRESS = 2, 4
_CHANGE_KEYBOARD_MAPPING = 100

#: Named X keysyms -> the key names of ``agent.sources.keys`` (pynput's names).
_NAMED = {
    0xFF08: "backspace", 0xFF09: "tab", 0xFE20: "tab", 0xFF0D: "enter", 0xFF8D: "enter",
    0xFF1B: "esc", 0xFFFF: "delete", 0xFF9F: "delete", 0xFF50: "home", 0xFF95: "home",
    0xFF51: "left", 0xFF96: "left", 0xFF52: "up", 0xFF97: "up", 0xFF53: "right",
    0xFF98: "right", 0xFF54: "down", 0xFF99: "down", 0xFF55: "page_up", 0xFF9A: "page_up",
    0xFF56: "page_down", 0xFF9B: "page_down", 0xFF57: "end", 0xFF9C: "end",
    0xFF63: "insert", 0xFF9E: "insert", 0x0020: "space", 0xFF80: "space",
    0xFFE1: "shift", 0xFFE2: "shift", 0xFFE3: "ctrl", 0xFFE4: "ctrl", 0xFFE5: "caps",
    0xFFE9: "alt", 0xFFEA: "alt", 0xFFE7: "alt", 0xFFE8: "alt", 0xFFEB: "super",
    0xFFEC: "super", 0xFE03: "alt_gr", 0xFF7E: "alt_gr", 0xFF7F: "num",
}
#: Keypad keysyms that produce characters.
_KEYPAD = {0xFFAA: "*", 0xFFAB: "+", 0xFFAC: ",", 0xFFAD: "-", 0xFFAE: ".", 0xFFAF: "/",
           0xFFBD: "=", **{0xFFB0 + i: str(i) for i in range(10)}}


@functools.cache
def _legacy_table() -> dict[int, str]:
    """Keysym -> character for the legacy (pre-Unicode) keysym ranges and dead keys, from
    pynput's table, loaded by file (importing pynput would open an X connection)."""
    table: dict[int, str] = {}
    try:
        spec = importlib.util.find_spec("pynput")
        if spec is None or not spec.submodule_search_locations:
            return table
        path = f"{next(iter(spec.submodule_search_locations))}/_util/xorg_keysyms.py"
        mod_spec = importlib.util.spec_from_file_location("_vigil_xorg_keysyms", path)
        if mod_spec is None or mod_spec.loader is None:
            return table
        mod = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(mod)
        for keysym, char in getattr(mod, "SYMBOLS", {}).values():
            if char and keysym not in table:
                table[int(keysym)] = str(char)
    except Exception as exc:  # a missing table only loses legacy keysyms, never a source
        log.warning("legacy keysym table unavailable (%s): Latin-1 and Unicode keysyms "
                    "only", exc)
    return table


def keysym_char(keysym: int) -> str:
    """The character an X keysym types ("" for none). Dead keys give a combining mark."""
    if 0x20 <= keysym <= 0x7E or 0xA0 <= keysym <= 0xFF:
        return chr(keysym)
    if 0x01000100 <= keysym <= 0x0110FFFF:
        return chr(keysym - 0x01000000)
    if keysym in _KEYPAD:
        return _KEYPAD[keysym]
    return _legacy_table().get(keysym, "")


def _is_dead(keysym: int) -> bool:
    return 0xFE50 <= keysym <= 0xFE8F


class Keymap:
    """The core keyboard mapping (keycode -> keysyms), kept in step with the requests that
    change it, and the modifier masks of NumLock and AltGr (ISO_Level3_Shift)."""

    def __init__(self, first: int, rows: Sequence[Sequence[int]], numlock: int = _MOD2,
                 level3: int = _MOD5) -> None:
        self._rows: dict[int, tuple[int, ...]] = {first + i: tuple(r) for i, r in
                                                  enumerate(rows)}
        self.numlock, self.level3 = numlock, level3

    def change(self, first: int, per_keycode: int, keysyms: Sequence[int]) -> None:
        """Apply a ChangeKeyboardMapping request."""
        for i in range(0, len(keysyms) - per_keycode + 1, per_keycode):
            self._rows[first + i // per_keycode] = tuple(keysyms[i:i + per_keycode])

    def keysym(self, keycode: int, state: int) -> int:
        """The keysym of *keycode* with modifier *state* (the core protocol's rules, with
        the XKB group in bits 13-14 and AltGr as level 3)."""
        row = self._rows.get(keycode, ())
        base = 0
        if state & self.level3 and len(row) > 4 and any(row[4:6]):
            base = 4
        elif (state >> 13) & 3 and len(row) > 2 and any(row[2:4]):
            base = 2
        lo = row[base] if len(row) > base else 0
        hi = row[base + 1] if len(row) > base + 1 else 0
        shift = bool(state & _SHIFT)
        if state & self.numlock and 0xFF80 <= hi <= 0xFFBD:
            return lo if shift else hi
        if hi and shift:
            return hi
        return lo


class _Translator:
    """Raw presses -> KeyEvents: modifiers, Caps Lock, dead keys."""

    def __init__(self, keymap: Keymap) -> None:
        self.keymap = keymap
        self._dead = ""

    def press(self, keycode: int, state: int) -> KeyEvent | None:
        keysym = self.keymap.keysym(keycode, state)
        if not keysym:
            return None
        mods = Mods(shift=bool(state & _SHIFT), ctrl=bool(state & _CTRL),
                    alt=bool(state & _MOD1), super=bool(state & _MOD4))
        name = _NAMED.get(keysym)
        if name is not None:
            if name == "space" and self._dead and not (mods.ctrl or mods.alt):
                accent, self._dead = self._dead, ""
                return KeyEvent("char", unicodedata.normalize("NFC", " " + accent).strip()
                                or accent)
            if name.split("_")[0] not in ("shift", "ctrl", "alt", "super", "caps", "num"):
                self._dead = ""
            return key_event(name, None, mods)
        char = keysym_char(keysym)
        if _is_dead(keysym):
            self._dead = char
            return None
        if not char:
            return None
        if state & _LOCK and char.isalpha() and char.lower() != char.upper():
            char = char.lower() if mods.shift else char.upper()
        elif mods.shift and char.isalpha() and keysym == self.keymap.keysym(keycode, 0):
            char = char.upper()  # a one-keysym binding (xdotool's): Shift gives the capital
        if self._dead:
            composed = unicodedata.normalize("NFC", char + self._dead)
            self._dead = ""
            if len(composed) == 1:
                char = composed
        return key_event(None, char, mods)


class X11InputSource:
    """Key presses and clicks of one X display, as KeyEvents."""

    def __init__(self, display: str | None = None) -> None:
        self.display_name = display

    def run(self, on_key: Callable[[KeyEvent], None], stop: threading.Event,
            ready: Callable[[], None] = lambda: None) -> None:
        from Xlib import XK, X, display
        from Xlib.ext import record

        ctl = display.Display(self.display_name)
        rec = display.Display(self.display_name)
        try:
            if not rec.has_extension("RECORD"):
                raise RuntimeError("the X server has no RECORD extension: keys cannot be seen")
            info = ctl.display.info
            count = info.max_keycode - info.min_keycode + 1
            keymap = Keymap(info.min_keycode, ctl.get_keyboard_mapping(info.min_keycode, count),
                            *self._masks(ctl, XK))
            tr = _Translator(keymap)
            ctx = rec.record_create_context(0, [record.AllClients], [{
                "core_requests": (_CHANGE_KEYBOARD_MAPPING, _CHANGE_KEYBOARD_MAPPING),
                "core_replies": (0, 0), "ext_requests": (0, 0, 0, 0),
                "ext_replies": (0, 0, 0, 0), "delivered_events": (0, 0),
                "device_events": (X.KeyPress, X.ButtonPress), "errors": (0, 0),
                "client_started": False, "client_died": False}])
            order = "<" if struct.pack("=H", 1) == b"\x01\x00" else ">"

            def handler(reply: Any) -> None:
                data = reply.data
                if reply.category == record.StartOfData:
                    ready()  # the server has enabled the context: every key from now is seen
                elif reply.category == record.FromServer:
                    for off in range(0, len(data) - 31, 32):
                        kind = data[off] & 0x7F
                        if kind == _KEY_PRESS:
                            state = struct.unpack_from(order + "H", data, off + 28)[0]
                            ev = tr.press(data[off + 1], state)
                            if ev is not None:
                                on_key(ev)
                        elif kind == _BUTTON_PRESS and data[off + 1] in (1, 2, 3):
                            on_key(KeyEvent("click", str(data[off + 1])))
                elif (reply.category == record.FromClient and len(data) >= 8
                      and data[0] == _CHANGE_KEYBOARD_MAPPING and data[5]):
                    n, first, per = data[1], data[4], data[5]
                    syms = struct.unpack_from(f"{order}{n * per}I", data, 8)
                    keymap.change(first, per, syms)

            done_r, done_w = os.pipe()

            def stopper() -> None:
                sfd = stop_fd(stop)
                if sfd is None:
                    while not stop.wait(1.0):
                        if select.select([done_r], [], [], 0)[0]:
                            return
                elif done_r in select.select([sfd, done_r], [], [])[0] and not stop.is_set():
                    return
                ctl.record_disable_context(ctx)
                ctl.flush()

            waker = threading.Thread(target=stopper, name="vigil-keys-stop", daemon=True)
            waker.start()
            try:
                rec.record_enable_context(ctx, handler)  # blocks until disabled
            finally:
                os.write(done_w, b"x")
                waker.join(timeout=5)
                os.close(done_r)
                os.close(done_w)
            if not stop.is_set():
                raise RuntimeError("the X server ended key recording")
            rec.record_free_context(ctx)
        finally:
            for d in (rec, ctl):
                try:
                    d.close()
                except Exception:
                    log.debug("closing an X connection failed", exc_info=True)

    @staticmethod
    def _masks(d: Any, XK: Any) -> tuple[int, int]:
        """The modifier masks holding Num_Lock and ISO_Level3_Shift on this server."""
        numlock, level3 = _MOD2, _MOD5
        try:
            want = {d.keysym_to_keycode(XK.string_to_keysym("Num_Lock")): "num",
                    d.keysym_to_keycode(XK.string_to_keysym("ISO_Level3_Shift")): "l3"}
            for i, codes in enumerate(d.get_modifier_mapping()):
                for code in codes:
                    if code and want.get(code) == "num":
                        numlock = 1 << i
                    elif code and want.get(code) == "l3":
                        level3 = 1 << i
        except Exception:
            log.debug("modifier mapping unavailable; using Mod2/Mod5", exc_info=True)
        return numlock, level3
