"""Password fields on Linux, from the accessibility bus (AT-SPI2), with jeepney (pure-Python
D-Bus).

The session bus names the accessibility bus (``org.a11y.Bus.GetAddress``). On that bus the
agent asks the registry to have applications emit ``object:state-changed:focused`` events
(``org.a11y.atspi.Registry.RegisterEvent``), listens for them, and asks each newly focused
object for its role (``org.a11y.atspi.Accessible.GetRole``, with a timeout):
``ROLE_PASSWORD_TEXT`` (40; the role name is "password text") is a password field. Chromium
reports it when accessibility is on (``--force-renderer-accessibility`` with
``ACCESSIBILITY_ENABLED=1`` or ``org.a11y.Status.IsEnabled``), Firefox and GTK/Qt
applications with toolkit accessibility on.

This runs on its own supervised thread: the keyboard listener never waits on D-Bus. Only the
role is read, never the field's name or text. Nothing happens at import time; jeepney is
imported in :meth:`AtspiFieldSource.run`.
"""

from __future__ import annotations

import logging
import os
import select
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from . import FieldInfo, stop_fd

__all__ = ["ROLE_PASSWORD_TEXT", "A11yUnavailable", "AtspiFieldSource"]

log = logging.getLogger(__name__)

#: AT-SPI2's AtspiRole for a password entry (atspi-constants.h; GetRoleName says
#: "password text").
ROLE_PASSWORD_TEXT = 40
_EVENTS = ("object:state-changed:focused",)


class A11yUnavailable(RuntimeError):
    """The accessibility bus cannot be reached: password fields cannot be told apart."""


class AtspiFieldSource:
    """Reports the role of each newly focused accessible object: password field or not."""

    def __init__(self, session_bus: str | None = None, timeout: float = 2.0) -> None:
        self.session_bus = session_bus
        self.timeout = timeout

    def run(self, on_field: Callable[[FieldInfo], None], stop: threading.Event,
            ready: Callable[[], None] = lambda: None) -> None:
        from jeepney import DBusAddress, HeaderFields, MatchRule, MessageType, new_method_call
        from jeepney.bus_messages import message_bus
        from jeepney.io.blocking import open_dbus_connection

        session = self.session_bus or os.environ.get("DBUS_SESSION_BUS_ADDRESS", "")
        if not session:
            raise A11yUnavailable("no session D-Bus (DBUS_SESSION_BUS_ADDRESS is not set)")
        try:
            with open_dbus_connection(session, auth_timeout=self.timeout) as sess:
                reply = sess.send_and_get_reply(new_method_call(
                    DBusAddress("/org/a11y/bus", bus_name="org.a11y.Bus",
                                interface="org.a11y.Bus"), "GetAddress"), timeout=self.timeout)
                address = _body(reply, MessageType)[0]
            conn = open_dbus_connection(str(address), auth_timeout=self.timeout)
        except A11yUnavailable:
            raise
        except Exception as exc:  # no bus, no launcher, refused, timed out
            raise A11yUnavailable(f"accessibility bus unavailable: {exc}") from exc
        try:
            registry = DBusAddress("/org/a11y/atspi/registry",
                                   bus_name="org.a11y.atspi.Registry",
                                   interface="org.a11y.atspi.Registry")
            for event in _EVENTS:
                _body(conn.send_and_get_reply(new_method_call(registry, "RegisterEvent", "s",
                                                              (event,)), timeout=self.timeout),
                      MessageType)
            rule = MatchRule(type="signal", interface="org.a11y.atspi.Event.Object",
                             member="StateChanged")
            _body(conn.send_and_get_reply(message_bus.AddMatch(rule), timeout=self.timeout),
                  MessageType)
            log.info("password fields: watching focus on the accessibility bus (AT-SPI)")
            ready()
            events: deque[Any] = deque(maxlen=256)
            sfd = stop_fd(stop)
            with conn.filter(rule, queue=events):
                while not stop.is_set():
                    if not events:
                        try:
                            conn.recv_messages(timeout=0)  # what is already buffered
                        except TimeoutError:
                            fds: list[Any] = [conn.sock] + ([sfd] if sfd is not None else [])
                            select.select(fds, [], [], 60.0 if sfd is not None else 1.0)
                            if stop.is_set():
                                break
                            try:
                                conn.recv_messages(timeout=0)
                            except TimeoutError:
                                continue
                        continue
                    msg = events.popleft()
                    body = msg.body
                    if len(body) < 2 or body[0] != "focused" or int(body[1]) != 1:
                        continue
                    fields = msg.header.fields
                    sender, path = fields.get(HeaderFields.sender), fields.get(HeaderFields.path)
                    if not sender or not path:
                        continue
                    on_field(self._role(conn, DBusAddress(
                        path, bus_name=sender, interface="org.a11y.atspi.Accessible"),
                        new_method_call, MessageType))
        except (ConnectionError, OSError, EOFError) as exc:
            if stop.is_set():
                return
            raise A11yUnavailable(f"accessibility bus connection lost: {exc}") from exc
        finally:
            conn.close()

    def _role(self, conn: Any, obj: Any, new_method_call: Any, message_type: Any) -> FieldInfo:
        """The focused object's role; unknown (not a password field, counted as an error)
        when the application does not answer in time."""
        try:
            role = int(_body(conn.send_and_get_reply(new_method_call(obj, "GetRole"),
                                                     timeout=self.timeout), message_type)[0])
        except TimeoutError:
            log.warning("password fields: an application did not say what has focus within "
                        "%.1f s; sign-in pages are still excluded by title", self.timeout)
            return FieldInfo(password=False, known=False)
        except Exception as exc:  # the object vanished, or the app is not AT-SPI compliant
            log.debug("password fields: GetRole failed: %s", exc)
            return FieldInfo(password=False, known=False)
        return FieldInfo(password=role == ROLE_PASSWORD_TEXT, known=True, role=role)


def _body(msg: Any, message_type: Any) -> tuple[Any, ...]:
    """The reply's body; a D-Bus error reply raises."""
    if msg.header.message_type == message_type.error:
        raise A11yUnavailable(f"D-Bus error: {msg.body[0] if msg.body else '?'}")
    return tuple(msg.body)
