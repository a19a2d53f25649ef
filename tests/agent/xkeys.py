"""Keyboard settings of a test X server."""

from __future__ import annotations

__all__ = ["autorepeat_off"]


def autorepeat_off(display: str) -> None:
    """Turn the X server's key autorepeat off (``xset r off``).

    xdotool presses and releases each key; on a loaded machine it can be descheduled between
    the two for longer than the autorepeat delay (660 ms), and the server then types the key
    again: an extra Left moved the cursor one further, the line on screen (and so what the
    agent matched, correctly) was no longer what the test meant to type. A pupil's held key
    still repeats; the agent models it as the server reports it.
    """
    from Xlib import X
    from Xlib import display as xdisplay

    d = xdisplay.Display(display)
    try:
        d.change_keyboard_control(auto_repeat_mode=X.AutoRepeatModeOff)
        d.sync()
    finally:
        d.close()
