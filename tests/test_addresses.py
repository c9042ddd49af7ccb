"""The per-call webhook guard (PURE): every spelling of an inside address is refused."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.addresses import (
    check_resolved,
    check_url,
    forbidden,
    host_allowed,
    literal_address,
    loose_ipv4,
    pattern_problem,
)

REFUSED = [
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/",
    "http://10.0.0.1/",
    "http://172.16.5.4/",
    "http://192.168.1.1/",
    "http://0.0.0.0/",
    "http://0/",
    "http://localhost/",
    "http://LOCALHOST./",
    "http://api.localhost/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0x7F.1/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[::1]/",
    "http://[::]/",
    "http://0177.0.0.1/",
    "http://017700000001/",
    "http://127.1/",
    "http://127.0.1/",
    "http://127.0.0.1./",
    "http://[fe80::1%25eth0]/",
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of 169.254.169.254
    "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
    "http://100.64.0.1/",  # carrier-grade NAT
    "http://224.0.0.1/",
    "http://240.0.0.1/",
    "http://255.255.255.255/",
    "http://user:pw@hooks.example.com/",
    "http://user@hooks.example.com/",
    "ftp://hooks.example.com/",
    "http://hooks.example.com/a b",
]


@pytest.mark.parametrize("url", REFUSED)
def test_inside_addresses_and_credentials_are_refused(url: str) -> None:
    """Every spelling the issue lists (and their cousins) is refused with a reason."""
    assert check_url(url) is not None


@pytest.mark.parametrize("url", ["https://hooks.example.com/x?token=1", "http://8.8.8.8/",
                                 "http://[2001:4860:4860::8888]:8443/h"])
def test_public_hosts_pass(url: str) -> None:
    """A public host (by name or address) is accepted."""
    assert check_url(url) is None


def test_allow_private_lets_loopback_through_but_not_credentials() -> None:
    """allow_private opens inside addresses; user:pw@ and other schemes stay refused."""
    assert check_url("http://127.0.0.1:9/", allow_private=True) is None
    assert check_url("http://u:p@127.0.0.1/", allow_private=True) is not None


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_every_inet_aton_spelling_reads_like_the_resolver(number: int) -> None:
    """Decimal, hex, octal and short forms all read as the C resolver reads them."""
    address = ipaddress.IPv4Address(number)
    a, b, c, d = address.packed
    spellings = [str(number), hex(number), f"0{number:o}", f"{a}.{(b << 16) | (c << 8) | d}",
                 f"{a}.{b}.{(c << 8) | d}", f"{a:#x}.0{b:o}.{c}.{d}"]
    for text in spellings:
        assert loose_ipv4(text) == address, text
        assert socket.inet_aton(text) == address.packed, text


@given(st.text(max_size=30))
@settings(max_examples=500)
def test_loose_ipv4_agrees_with_inet_aton(text: str) -> None:
    """Whatever the text, our reading never differs from the C library's where it has one."""
    ours = loose_ipv4(text)
    try:
        theirs = socket.inet_aton(text) if text.isascii() and "\x00" not in text else None
    except OSError:
        theirs = None
    if ours is not None:
        # inet_aton also accepts trailing garbage after a space; a match is what matters
        assert theirs == ours.packed or text.endswith(".")


@given(st.ip_addresses())
def test_forbidden_is_exactly_not_global_or_special(address: ipaddress.IPv4Address
                                                    | ipaddress.IPv6Address) -> None:
    """Any address that is not globally routable, or is multicast, is forbidden."""
    inner = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    target = inner or address
    special = not target.is_global or target.is_multicast or target.is_private
    if special:
        assert forbidden(address) is not None
    if forbidden(address) is None:
        assert target.is_global


@given(st.ip_addresses(v=4).filter(lambda a: not a.is_global))
def test_mapped_and_literal_spellings_are_caught(address: ipaddress.IPv4Address) -> None:
    """An inside IPv4 address is refused as itself, as a number, and inside IPv6."""
    for host in (str(address), str(int(address)), f"[::ffff:{address}]"):
        assert check_url(f"http://{host}/x") is not None, host
        assert literal_address(host) is not None


@pytest.mark.parametrize(("host", "allowed"), [
    ("hooks.example.com", True), ("HOOKS.example.com.", True), ("a.example.org", True),
    ("a.b.example.org", True), ("example.org", False), ("evilexample.org", False),
    ("example.org.evil.com", False), ("hooks.example.com.evil.com", False),
])
def test_allow_hosts_matches_names_and_wildcards(host: str, allowed: bool) -> None:
    """Exact names match case-insensitively; *.example.org matches below it, not itself."""
    assert host_allowed(host, ["hooks.example.com", "*.example.org"]) is allowed


@given(st.from_regex(r"[a-z]{1,10}(\.[a-z]{1,10}){0,3}", fullmatch=True),
       st.from_regex(r"[a-z]{1,10}\.[a-z]{2,5}", fullmatch=True))
def test_a_wildcard_never_matches_outside_its_domain(label: str, domain: str) -> None:
    """*.D matches L.D for any L, and never D itself nor D glued to something else."""
    assert host_allowed(f"{label}.{domain}", [f"*.{domain}"])
    assert not host_allowed(domain, [f"*.{domain}"])
    assert not host_allowed(f"{label}{domain}", [f"*.{domain}"])


def test_allow_hosts_refuses_other_hosts_with_one_line() -> None:
    """With an allow-list, a host not on it is refused, naming the setting."""
    reason = check_url("https://other.example.net/", allow_hosts=["*.example.org"])
    assert reason is not None and "allow_hosts" in reason


def test_bad_allow_host_patterns_are_reported() -> None:
    """An allow_hosts entry must be a host name or *.domain."""
    assert pattern_problem("*.example.org") is None
    assert pattern_problem("http://x") is not None
    assert pattern_problem("a..b") is not None


def test_a_name_resolving_inside_is_refused() -> None:
    """Any resolved address inside refuses the host (a name pointing in and out is an attack)."""
    assert check_resolved("h.example", ["93.184.216.34"]) is None
    assert check_resolved("h.example", ["93.184.216.34", "127.0.0.1"]) is not None
    assert check_resolved("h.example", ["::ffff:10.0.0.1"]) is not None
