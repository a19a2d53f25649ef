"""Password fields on macOS, from the Accessibility API and secure keyboard entry. NOT YET
RUN ON A REAL MAC.

Every *interval* seconds this source's own thread asks the system-wide accessibility element
for ``kAXFocusedUIElementAttribute`` and that element's ``kAXRoleAttribute`` and
``kAXSubroleAttribute`` (``AXUIElementCopyAttributeValue``, with a messaging timeout so a
hung application cannot stall it). AppKit's ``NSSecureTextField`` reports the subrole
``AXSecureTextField`` (``kAXSecureTextFieldSubrole``); so do Safari/WebKit and Chromium
``<input type=password>`` once their accessibility tree is on. It also asks
``IsSecureEventInputEnabled()`` (Carbon; on the main thread): while an application holds
secure input (a password field, Terminal's Secure Keyboard Entry) the focus counts as a
password field. A change of element, role or secure-input state is reported once, as
:class:`~agent.sources.FieldInfo`; no answer in time is ``known=False``. Only the role is
read, never the field's value.

Without Accessibility (``kAXErrorAPIDisabled``) this raises :class:`A11yUnavailable`: the
monitor restarts it with back-off and reports password detection as degraded. Nothing
happens at import time: pyobjc is reached only through :class:`~agent.backends.cocoa.Cocoa`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

from . import FieldInfo

__all__ = ["ROLE_OTHER", "ROLE_SECURE_INPUT", "ROLE_SECURE_TEXT_FIELD", "A11yUnavailable",
           "AxFields", "MacFieldSource", "field_info"]

log = logging.getLogger(__name__)

AX_SUCCESS = 0
AX_API_DISABLED = -25211  # kAXErrorAPIDisabled
AX_NO_VALUE = -25212  # kAXErrorNoValue: nothing has keyboard focus
SECURE_TEXT_FIELD = "AXSecureTextField"  # kAXSecureTextFieldSubrole

#: FieldInfo.role on macOS (AX roles are strings; these say which rule decided).
ROLE_OTHER, ROLE_SECURE_TEXT_FIELD, ROLE_SECURE_INPUT = 0, 1, 2


class A11yUnavailable(RuntimeError):
    """Accessibility is not granted (or not answering): password fields cannot be told."""


class AxFields(Protocol):
    def focused_field(self) -> tuple[int, object, str, str]:
        """(AXError, identity, role, subrole) of the focused UI element."""

    def secure_input(self) -> bool:
        """IsSecureEventInputEnabled()."""


def field_info(error: int, role: str, subrole: str, secure: bool) -> FieldInfo:
    if secure:
        return FieldInfo(password=True, known=True, role=ROLE_SECURE_INPUT)
    if SECURE_TEXT_FIELD in (role, subrole):
        return FieldInfo(password=True, known=True, role=ROLE_SECURE_TEXT_FIELD)
    if error in (AX_SUCCESS, AX_NO_VALUE):
        return FieldInfo(password=False, known=True, role=ROLE_OTHER)
    return FieldInfo(password=False, known=False)  # kAXErrorCannotComplete, a timeout...


class MacFieldSource:
    """Reports each change of the focused element (or of secure input): password or not."""

    def __init__(self, api: AxFields | None = None, interval: float = 0.1,
                 max_failures: int = 50) -> None:
        self._api = api
        self.interval, self.max_failures = interval, max_failures

    @property
    def api(self) -> AxFields:
        if self._api is None:
            from ..backends.cocoa import Cocoa

            self._api = Cocoa.shared()
        return self._api

    def run(self, on_field: Callable[[FieldInfo], None], stop: threading.Event,
            ready: Callable[[], None] = lambda: None) -> None:
        api = self.api
        last: tuple[object, str, str, bool, bool] | None = None
        failures = 0
        started = False
        while not stop.is_set():
            try:
                error, identity, role, subrole = api.focused_field()
                secure = api.secure_input()
            except Exception as exc:  # a pyobjc error, or the main thread did not answer
                failures += 1
                if failures >= self.max_failures:
                    raise A11yUnavailable(f"the Accessibility API failed {failures} times in "
                                          f"a row: {type(exc).__name__}: {exc}") from exc
                stop.wait(self.interval)
                continue
            failures = 0
            if error == AX_API_DISABLED:
                raise A11yUnavailable("Accessibility is not granted to the agent: password "
                                      "fields are recognised by sign-in page titles only")
            if not started:
                started = True
                log.info("password fields: watching focus through the Accessibility API")
                ready()
            info = field_info(error, role, subrole, secure)
            key = (identity, role, subrole, secure, info.known)
            if key != last:
                last = key
                on_field(info)
            stop.wait(self.interval)
