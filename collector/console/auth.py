"""Who is asking, seen from HTTP: the client address (X-Forwarded-For honoured only from a
configured trusted proxy) and the account words the views and templates use. Accounts
themselves live in :mod:`collector.services.accounts`."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from collector.services.accounts import (
    CONTENT_ROLES,
    PERMISSIONS,
    ROLES,
    AuthError,
    LoginThrottled,
    Session,
    User,
    hash_password,
)

__all__ = ["CONTENT_ROLES", "PERMISSIONS", "ROLES", "AuthError", "LoginThrottled", "Proxies",
           "Session", "User", "client_address", "hash_password"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Proxies:
    """The reverse proxies whose X-Forwarded-For header is believed (addresses or CIDRs)."""

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self.networks: list[Network] = []
        for entry in entries:
            try:
                self.networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError as exc:
                raise ValueError(f"server.trusted_proxies: {entry!r} is not an IP address or "
                                 "network (e.g. '127.0.0.1' or '10.0.0.0/24')") from exc

    def trusts(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.networks)


def client_address(peer: str, forwarded_for: Sequence[str], proxies: Proxies) -> str:
    """The address a request came from. The peer, unless the peer is a trusted proxy: then
    the right-most X-Forwarded-For entry that is not itself a trusted proxy (entries further
    left were written by the client and prove nothing)."""
    if not proxies.trusts(peer):
        return peer
    hops = [h.strip() for header in forwarded_for for h in header.split(",") if h.strip()]
    for hop in reversed(hops):
        if not proxies.trusts(hop):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer
    return peer
