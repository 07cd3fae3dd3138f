"""``async_callback_hosts``: where async callbacks may go. Pure (``ipaddress`` only): the config reads it.

``/async-function/*`` is public, as in OpenFaaS, so whoever can call a function can name a callback URL,
and the daemon then POSTs the function's answer there. Left open, that lets anyone on the network make the
daemon send requests into places only it can reach (server-side request forgery): an admin page on the
LAN, a cloud metadata service. So by default a callback may go **only to this host's loopback**
(``127.0.0.0/8``, ``::1``, ``localhost``) -- where a single-host daemon's receivers usually run -- and
the operator lists anything else:

================================ ============================================================
entry                            allows
================================ ============================================================
``hooks.example.com``            that host name (not its subdomains); any address it resolves to
``*.example.com``                every name under ``example.com`` (not ``example.com`` itself)
``10.0.0.7``, ``fd00::7``        that address, written as such in the URL
``10.0.0.0/8``                   addresses of that network written as such in the URL
``*``                            any host (the OpenFaaS queue-worker's behaviour)
================================ ============================================================

Host names are matched as written in the URL, not by what they resolve to (a name not listed is refused
at once, nothing is resolved for it). Whatever the list says, some addresses are never called back --
link-local (cloud metadata), unspecified, multicast, and this gateway's own routes but ``/function/``
(:func:`faasd.queue.callback.forbidden_address`); and a name allowed only because it is ``localhost``
must resolve to loopback addresses only.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["LOOPBACK_ONLY", "CallbackHosts", "IpAddress", "IpNetwork", "is_localhost", "unmapped"]

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
MAX_ENTRIES = 1000
_FORMS = "a host name, *.domain, address, network or *"


def is_localhost(host: str) -> bool:
    """``localhost`` and its subdomains: loopback by definition (RFC 6761)."""
    host = host.lower().rstrip(".")
    return host == "localhost" or host.endswith(".localhost")


def unmapped(address: IpAddress) -> IpAddress:
    """An IPv4-mapped IPv6 address (``::ffff:127.0.0.1``) as the IPv4 address it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True, slots=True)
class CallbackHosts:
    """The parsed list (see the module docstring); the default allows loopback only."""

    any_host: bool = False
    names: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()
    """``.example.com`` for the entry ``*.example.com``."""
    networks: tuple[IpNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: str | Iterable[str]) -> CallbackHosts:
        """Read entries, given as a list or as one comma-separated string.

        Raises:
            ValueError: an entry that is none of the forms of the module docstring, naming it.
        """
        items = entries.split(",") if isinstance(entries, str) else list(entries)
        if len(items) > MAX_ENTRIES:
            raise ValueError(f"at most {MAX_ENTRIES} entries")
        any_host = False
        names: set[str] = set()
        suffixes: list[str] = []
        networks: list[IpNetwork] = []
        for item in items:
            if not isinstance(item, str):
                raise ValueError(f"{item!r} is not a string")
            entry = item.strip().lower()
            if len(entry) > 1 and entry.endswith(".") and entry[-2] not in ".*":
                entry = entry[:-1]  # A fully qualified name: hooks.example.com.
            if not entry:
                continue
            if entry == "*":
                any_host = True
            elif entry.startswith("*.") and _NAME.fullmatch(entry[2:]):
                suffixes.append(entry[1:])
            elif "/" in entry or ":" in entry or entry.replace(".", "").isdigit():
                try:
                    networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                except ValueError:
                    raise ValueError(
                        f"{item.strip()[:80]!r} is not a host name, *.domain, address, network or *"
                    ) from None
            elif _NAME.fullmatch(entry) and len(entry) <= 253:
                names.add(entry)
            else:
                raise ValueError(f"{item.strip()[:80]!r} is not {_FORMS}")
        return cls(any_host, frozenset(names), tuple(suffixes), tuple(networks))

    def __str__(self) -> str:
        entries = ["*"] if self.any_host else []
        entries += sorted(self.names) + [f"*{suffix}" for suffix in self.suffixes] + [str(n) for n in self.networks]
        return ",".join(entries) or "(loopback only)"

    def refusal(self, host: str, literal: IpAddress | None) -> str | None:
        """Why a callback may not go to ``host`` (``literal``: the host when written as an address), or None."""
        if self.any_host:
            return None
        if literal is not None:
            address = unmapped(literal)
            if address.is_loopback or any(address in network for network in self.networks):
                return None
        elif is_localhost(host) or self._listed_name(host):
            return None
        return (
            f"X-Callback-Url host {host} is not allowed: callbacks go to this host's loopback"
            " or to the hosts in async_callback_hosts"
        )

    def loopback_only(self, host: str, literal: IpAddress | None) -> bool:
        """Whether ``host`` is allowed only as ``localhost``: then every address it resolves to must be
        loopback (a resolver that says otherwise is not believed)."""
        return not self.any_host and literal is None and is_localhost(host) and not self._listed_name(host)

    def _listed_name(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return host in self.names or any(host.endswith(suffix) for suffix in self.suffixes)


LOOPBACK_ONLY = CallbackHosts()
"""The default: nothing listed, callbacks go to loopback only."""
