"""Which IP addresses a production crawl may connect to: public (globally routable) ones only.

Seed URLs arrive from the public internet (QStash deliveries, the edge worker's URL discovery),
so without this a URL, or a public host name that resolves to one, could make the crawler fetch
loopback services, the private network or a cloud metadata endpoint (169.254.169.254), and the
answer would end up stored and searchable. Pure functions; the Scrapy resolver applies them to
every address a host name resolves to, so DNS tricks are caught where the connection is made.
"""

from __future__ import annotations

import ipaddress

# Most specific first: 127.0.0.1 is also "reserved"-ish in some tables, say the useful word.
_KINDS = (
    ("is_unspecified", "an unspecified address"),
    ("is_loopback", "a loopback address"),
    ("is_link_local", "a link-local address (cloud metadata endpoints live here)"),
    ("is_multicast", "a multicast address"),
    ("is_private", "a private-network address"),
    ("is_reserved", "a reserved address"),
)


def address_fault(address: str) -> str | None:
    """Why `address` (an IPv4/IPv6 literal, optionally with an IPv6 %zone) must not be crawled
    in production, or None for a public address. Not an address at all: None (names are
    checked after they resolve)."""
    text = address.strip().strip("[]").split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 reaches 127.0.0.1
    if ip.is_global and not ip.is_multicast:  # some multicast ranges count as "global"
        return None
    kind = next((words for attr, words in _KINDS if getattr(ip, attr)), None)
    return f"{ip} is {kind or 'not a public address'}"


def seed_url_fault(url: str) -> str | None:
    """Why a seed URL's host is certainly not public, decided without DNS: an IP literal of a
    non-public range, or a `localhost` name (RFC 6761: always loopback). Other names are left to
    the crawler's resolver, which checks what they resolve to."""
    from urllib.parse import urlsplit

    try:
        host = urlsplit(url).hostname or ""
    except ValueError:  # a malformed [IPv6] host: the URL rules name that elsewhere
        return None
    if host == "localhost" or host.endswith(".localhost"):
        return f"{host} is a loopback name"
    return address_fault(host)
