"""Scrapy DNS resolver that refuses non-public addresses (CrawlSettings.allow_private_addresses
False, set in production by QPIPE_CRAWL_PRIVATE_ADDRESSES=refuse).

Twisted's HostnameEndpoint asks the reactor's name resolver for every connection, IP literals
included, so filtering the resolved addresses here covers seeds, links, redirects and
robots.txt alike, and a public name that resolves to 10.0.0.5 is caught where it connects.
A refused host fails as a DNS error; `refusal(host)` gives the spider the reason for its row.
"""

from __future__ import annotations

from typing import Any, cast

from scrapy.resolver import CachingHostnameResolver
from twisted.internet.interfaces import IResolutionReceiver
from zope.interface import implementer

from qpipe_dagster.crawl.addresses import address_fault

# host -> why it was refused. One crawl per process (the Pipes child), so module state is enough;
# a host's answer does not change within a crawl.
_REFUSED: dict[str, str] = {}


def refusal(host: str | None) -> str | None:
    """The reason `host` was refused in this process, or None."""
    return _REFUSED.get((host or "").lower())


@implementer(IResolutionReceiver)
class _PublicOnly:
    """Passes public addresses on; remembers why others were dropped."""

    def __init__(self, receiver: Any, host: str) -> None:
        self._receiver = receiver
        self._host = host.lower()
        self._passed = 0
        self._faults: list[str] = []

    def resolutionBegan(self, resolution: Any) -> None:  # Twisted's interface
        self._receiver.resolutionBegan(resolution)

    def addressResolved(self, address: Any) -> None:
        fault = address_fault(getattr(address, "host", ""))
        if fault is None:
            self._passed += 1
            self._receiver.addressResolved(address)
        else:
            self._faults.append(fault)

    def resolutionComplete(self) -> None:
        if not self._passed and self._faults:
            _REFUSED[self._host] = self._faults[0]
        self._receiver.resolutionComplete()


class PublicAddressResolver(CachingHostnameResolver):
    """Scrapy's caching resolver, minus every loopback, private, link-local or reserved address."""

    def resolveHostName(  # Twisted's interface
        self,
        resolutionReceiver: Any,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Any = None,
        transportSemantics: str = "TCP",
    ) -> Any:
        # zope's @implementer is invisible to a type checker: say what it declares.
        receiver = cast(IResolutionReceiver, _PublicOnly(resolutionReceiver, hostName))
        return super().resolveHostName(
            receiver,
            hostName,
            portNumber,
            addressTypes,
            transportSemantics,
        )
