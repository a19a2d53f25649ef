"""Password fields on Windows, from UI Automation's focus-changed events. NOT YET RUN ON
REAL WINDOWS.

``IUIAutomation::AddFocusChangedEventHandler`` (system-wide: "you cannot set a narrower
scope") calls our handler each time keyboard focus moves to another element, in any
process. The handler is registered with a cache request for ``UIA_IsPasswordPropertyId``
(30019) and ``UIA_ControlTypePropertyId`` (30003), so UI Automation fetches both in the same
cross-process round trip that delivers the event, and the handler only reads its cache
(``GetCachedPropertyValueEx(..., ignoreDefaultValue=TRUE)``): a provider that does not
support ``IsPassword`` answers ``ReservedNotSupportedValue`` instead of the default False,
and that is reported as unknown, never as "not a password". Classic ``Edit`` controls with
``ES_PASSWORD`` (through the MSAA proxy), WPF ``PasswordBox``, UWP/WinUI ``PasswordBox``,
and Chromium/WebView2/Electron and Firefox ``<input type=password>`` (once they expose
their accessibility tree) all set ``IsPassword``.

Threading follows Microsoft's *Understanding Threading Issues*: the thread that registers
the handler owns no window and is a COM multithreaded-apartment thread
(``CoInitializeEx(COINIT_MULTITHREADED)``); the handler is removed on the same thread it was
added on; the handler itself runs on a UI Automation thread and only enqueues. This source's
own thread then calls ``on_field``: the keyboard hook never waits on UI Automation.

comtypes (``enthought/comtypes``) is imported inside :class:`ComtypesUia`; nothing happens at
import time. (The ``uiautomation`` package wraps comtypes but has no event support:
yinkaisheng/Python-UIAutomation-for-Windows#258.)
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sys
import threading
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

from . import FieldInfo

__all__ = ["UIA_CONTROL_TYPE", "UIA_IS_PASSWORD", "ComtypesUia", "Uia", "UiaFieldSource",
           "UiaUnavailable", "field_info"]

log = logging.getLogger(__name__)

#: UIA_IsPasswordPropertyId and UIA_ControlTypePropertyId (UIAutomationClient.h).
UIA_IS_PASSWORD = 30019
UIA_CONTROL_TYPE = 30003
#: UI Automation gives up on an unresponsive provider after this long (IUIAutomation2).
TRANSACTION_TIMEOUT_MS = 2000


class UiaUnavailable(RuntimeError):
    """UI Automation cannot be started: password fields cannot be told apart."""


class Uia(Protocol):
    """The COM calls, all made on the source's thread except :meth:`cached`, which the
    handler calls on UI Automation's thread."""

    def initialize(self) -> None:
        """CoInitializeEx(COINIT_MULTITHREADED) for this thread."""

    def subscribe(self, on_focus: Callable[[Any], None]) -> None:
        """Create CUIAutomation and a cache request (IsPassword, ControlType), and
        AddFocusChangedEventHandler; *on_focus(sender)* runs on a UI Automation thread."""

    def unsubscribe(self) -> None:
        """RemoveFocusChangedEventHandler (on the thread that subscribed)."""

    def uninitialize(self) -> None:
        """CoUninitialize, balancing :meth:`initialize`."""

    def cached(self, element: Any, property_id: int) -> object:
        """GetCachedPropertyValueEx(property_id, TRUE); raises when it fails."""

    def not_supported(self) -> object:
        """IUIAutomation::ReservedNotSupportedValue."""


def field_info(uia: Uia, element: Any) -> FieldInfo:
    """What the focused element's cache says; unknown when UI Automation does not say."""
    try:
        value = uia.cached(element, UIA_IS_PASSWORD)
    except Exception as exc:  # the element vanished, the provider timed out (COMError)
        log.debug("password fields: IsPassword unavailable: %s", exc)
        return FieldInfo(password=False, known=False)
    if value is uia.not_supported() or not isinstance(value, bool):
        return FieldInfo(password=False, known=False)  # not supported, or VT_EMPTY
    try:
        role = uia.cached(element, UIA_CONTROL_TYPE)
    except Exception:
        role = 0
    return FieldInfo(password=value, known=True,
                     role=role if isinstance(role, int) and not isinstance(role, bool) else 0)


class UiaFieldSource:
    """Reports each newly focused UI Automation element: password field or not."""

    def __init__(self, uia: Callable[[], Uia] | None = None, backlog: int = 64) -> None:
        self._make = uia or ComtypesUia
        self.backlog = backlog
        #: Focus events dropped because the agent fell behind (the newest are kept).
        self.dropped = 0

    def run(self, on_field: Callable[[FieldInfo], None], stop: threading.Event,
            ready: Callable[[], None] = lambda: None) -> None:
        uia = self._make()
        events: queue.Queue[FieldInfo] = queue.Queue(maxsize=self.backlog)

        def on_focus(sender: Any) -> None:  # UI Automation's thread: read the cache, enqueue
            try:
                info = field_info(uia, sender)
                while True:
                    try:
                        events.put_nowait(info)
                        return
                    except queue.Full:
                        self.dropped += 1
                        with contextlib.suppress(queue.Empty):
                            events.get_nowait()  # the newest focus is the one that counts
            except Exception:  # never raise into UIAutomationCore
                log.exception("password fields: focus handler failed")

        try:
            uia.initialize()
        except Exception as exc:
            raise UiaUnavailable(f"COM could not be initialised: {exc}") from exc
        try:
            try:
                uia.subscribe(on_focus)
            except Exception as exc:
                raise UiaUnavailable(f"UI Automation unavailable: {exc}") from exc
            try:
                log.info("password fields: watching focus through UI Automation")
                ready()
                while not stop.is_set():
                    try:
                        info = events.get(timeout=0.5)
                    except queue.Empty:
                        continue
                    on_field(info)
            finally:
                uia.unsubscribe()
        finally:
            uia.uninitialize()


class ComtypesUia:
    """The real calls, through comtypes. Create it on the thread that will use it."""

    def __init__(self) -> None:
        self._uia: Any = None
        self._handler: Any = None
        self._not_supported: object = object()

    def initialize(self) -> None:
        # comtypes initialises COM for the thread that first imports it, with
        # sys.coinit_flags (else single-threaded): ask for the multithreaded apartment.
        if "comtypes" not in sys.modules:
            sys.coinit_flags = 0  # type: ignore[attr-defined]
        import comtypes

        comtypes.CoInitializeEx(comtypes.COINIT_MULTITHREADED)  # S_FALSE if already MTA

    def subscribe(self, on_focus: Callable[[Any], None]) -> None:
        import comtypes
        import comtypes.client

        comtypes.client.GetModule("UIAutomationCore.dll")
        from comtypes.gen import UIAutomationClient as UIA

        uia = comtypes.client.CreateObject(UIA.CUIAutomation, interface=UIA.IUIAutomation)
        try:  # IUIAutomation2 (Windows 8+): a hung application must not stall the events
            uia2 = uia.QueryInterface(UIA.IUIAutomation2)
            uia2.TransactionTimeout = TRANSACTION_TIMEOUT_MS
            uia2.ConnectionTimeout = TRANSACTION_TIMEOUT_MS
        except (comtypes.COMError, AttributeError):
            pass
        cache = uia.CreateCacheRequest()
        cache.AddProperty(UIA_IS_PASSWORD)
        cache.AddProperty(UIA_CONTROL_TYPE)

        class Handler(comtypes.COMObject):  # type: ignore[misc]
            _com_interfaces_: ClassVar[list[Any]] = [UIA.IUIAutomationFocusChangedEventHandler]

            def HandleFocusChangedEvent(self, sender: Any) -> None:
                on_focus(sender)  # returning None answers S_OK

        self._uia, self._handler = uia, Handler()
        self._not_supported = uia.ReservedNotSupportedValue
        uia.AddFocusChangedEventHandler(cache, self._handler)

    def unsubscribe(self) -> None:
        if self._uia is not None and self._handler is not None:
            try:
                self._uia.RemoveFocusChangedEventHandler(self._handler)
            except Exception as exc:
                log.warning("password fields: RemoveFocusChangedEventHandler failed: %s", exc)
        # The handler object is kept until the process drops this source: "an event may be
        # delivered after the handler has been unsubscribed" (RemoveAutomationEventHandler).
        self._uia = None

    def uninitialize(self) -> None:
        import comtypes

        comtypes.CoUninitialize()

    def cached(self, element: Any, property_id: int) -> object:
        return element.GetCachedPropertyValueEx(property_id, True)

    def not_supported(self) -> object:
        return self._not_supported
