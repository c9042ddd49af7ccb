"""PURE: may a per-call webhook go to this URL, this host, this address? (the SSRF guard)

A per-call URL comes from whoever may call ``track`` or the API, not from the operator, so
unless ``[call_webhooks] allow_private`` is set it must not reach the daemon's own network:
loopback, private, link-local (cloud metadata at 169.254.169.254), multicast, reserved,
unspecified, or anything else that is not globally routable. Hosts are refused however they
are spelled: ``2130706433``, ``0x7f000001``, ``0177.0.0.1`` and ``127.1`` are inet_aton's
spellings of 127.0.0.1 (and the resolver accepts them), ``[::ffff:127.0.0.1]`` is IPv4
inside IPv6. These checks look at the text only; the transport checks again the address it
actually connects to (``webhooks/guarded.py``), which is what defeats DNS names that point
inside and DNS rebinding.

Nothing here does I/O, so every rule is tested exhaustively (hypothesis).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_PART = re.compile(r"0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*", re.ASCII)
_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?", re.ASCII)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


def loose_ipv4(text: str) -> ipaddress.IPv4Address | None:
    """``text`` read as inet_aton reads it (1 to 4 parts, each decimal, 0x-hex or 0-octal;
    the last part fills the remaining bytes), or None if it is not an IPv4 address."""
    parts = text.removesuffix(".").split(".")
    if not 1 <= len(parts) <= 4 or not all(_PART.fullmatch(p) for p in parts):
        return None
    values = [_part_value(p) for p in parts]
    if any(v > 255 for v in values[:-1]) or values[-1] >= 256 ** (5 - len(parts)):
        return None
    number = 0
    for value in values[:-1]:
        number = number * 256 + value
    number = number * 256 ** (5 - len(parts)) + values[-1]
    return ipaddress.IPv4Address(number)


def _part_value(part: str) -> int:
    if part[:2].lower() == "0x":
        return int(part[2:] or "0", 16)
    if part.startswith("0"):
        return int(part, 8)
    return int(part)


def literal_address(host: str) -> Address | None:
    """The address a host names by itself (no DNS), in any spelling; None for a name."""
    text = host.strip("[]")
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return loose_ipv4(text)


def forbidden(address: Address) -> str | None:
    """Why a per-call webhook must not reach ``address``, or None when it is public."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (
            ipaddress.IPv4Address(int(address) & 0xFFFFFFFF) if address in _NAT64 else None)
        if embedded is not None:
            return forbidden(embedded)
        if address.teredo is not None:
            return "a Teredo tunnel address"
    checks = (("a loopback", address.is_loopback), ("an unspecified", address.is_unspecified),
              ("a link-local", address.is_link_local), ("a multicast", address.is_multicast),
              ("a private", address.is_private), ("a reserved", address.is_reserved))
    for name, hit in checks:
        if hit:
            return f"{name} address"
    if not address.is_global:
        return "not a public address"
    return None


def normal_host(host: str) -> str:
    """Lower case, without the root's trailing dot: how hosts are compared."""
    return host.lower().removesuffix(".")


def host_allowed(host: str, patterns: Iterable[str]) -> bool:
    """Whether ``host`` is on the allow-list: an exact name, or ``*.example.org`` for any
    name below example.org (not example.org itself)."""
    name = normal_host(host)
    for entry in patterns:
        pattern = normal_host(entry)
        if pattern.startswith("*."):
            if name.endswith(pattern[1:]) and len(name) > len(pattern) - 1:
                return True
        elif name == pattern:
            return True
    return False


def pattern_problem(pattern: str) -> str | None:
    """Why an ``allow_hosts`` entry is not a host name or ``*.`` + a host name."""
    name = normal_host(pattern.removeprefix("*."))
    labels = name.split(".")
    if not name or not all(_LABEL.fullmatch(label) for label in labels):
        return f"{pattern[:80]!r} is not a host name or *.domain"
    return None


def check_url(url: str, *, allow_hosts: Sequence[str] = (),  # noqa: PLR0911 - one return per rule
              allow_private: bool = False) -> str | None:
    """Why the per-call URL ``url`` is refused (looking at the text only), or None."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not 0-65535
    except ValueError:
        return "must be an http(s) URL"
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host:
        return "must be an http(s) URL"
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        return "must not contain spaces or control characters"
    if "@" in parts.netloc:
        return "must not carry user:password@ (put a token in the path or query instead)"
    if not host.isascii():
        return "must name its host in ASCII (punycode: xn--...)"
    if allow_hosts and not host_allowed(host, allow_hosts):
        return f"host {host[:80]!r} is not in [call_webhooks] allow_hosts"
    if allow_private:
        return None
    address = literal_address(host)
    if address is not None and (why := forbidden(address)) is not None:
        return f"host {host[:80]!r} is {why} (set [call_webhooks] allow_private to allow it)"
    name = normal_host(host)
    if name in _LOCAL_NAMES or name.endswith(".localhost"):
        return f"host {host[:80]!r} is a loopback name (set [call_webhooks] allow_private)"
    return None


def check_resolved(host: str, addresses: Iterable[str]) -> str | None:
    """Why ``host`` must not be reached given the addresses it resolved to (any one
    forbidden refuses all: a name pointing both out and in is an attack, not a mistake)."""
    for text in addresses:
        address = literal_address(text)
        if address is None:
            return f"host {host[:80]!r} resolved to {text[:60]!r}, not an address"
        if (why := forbidden(address)) is not None:
            return (f"host {host[:80]!r} resolves to {address}, {why} "
                    "(set [call_webhooks] allow_private to allow it)")
    return None
