"""QPIPE_CRAWL_PRIVATE_ADDRESSES=refuse: a production crawl connects to public addresses only.

The crawls are real (a loopback server, a child process): with the guard on, the same server the
default settings fetch is refused, by IP literal and by a name that resolves to it, and nothing
reaches it. Pure address rules are checked directly.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from qpipe_dagster.crawl.addresses import address_fault
from qpipe_dagster.crawl.runner import crawl_subprocess
from qpipe_dagster.crawl.settings import CrawlSettings
from qpipe_dagster.settings import SettingError, crawl_private_addresses_allowed
from qpipe_dagster_tests.crawl.conftest import Reply, page, serve

FAST = CrawlSettings(max_depth=1, max_pages=10, timeout_s=2.0, retries=1, obey_robots=True,
                     autothrottle_start_delay_s=0.0)  # fmt: skip


@pytest.mark.parametrize(
    ("address", "words"),
    [
        ("127.0.0.1", "127.0.0.1 is a loopback address"),
        ("::1", "::1 is a loopback address"),
        ("[::1]", "::1 is a loopback address"),
        ("::ffff:127.0.0.1", "127.0.0.1 is a loopback address"),  # IPv4-mapped
        ("10.20.30.40", "10.20.30.40 is a private-network address"),
        ("172.16.0.1", "172.16.0.1 is a private-network address"),
        ("192.168.1.10", "192.168.1.10 is a private-network address"),
        ("169.254.169.254", "169.254.169.254 is a link-local address (cloud metadata"),
        ("fe80::1%eth0", "fe80::1 is a link-local address"),
        ("fd00::1", "fd00::1 is a private-network address"),
        ("0.0.0.0", "0.0.0.0 is an unspecified address"),
        ("224.0.0.1", "224.0.0.1 is a multicast address"),
        ("100.64.0.1", "100.64.0.1 is not a public address"),  # carrier-grade NAT
    ],
)
def test_non_public_addresses_are_named(address: str, words: str) -> None:
    fault = address_fault(address)
    assert fault is not None and fault.startswith(words)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "example.com"])
def test_public_addresses_and_names_pass(address: str) -> None:
    assert address_fault(address) is None


def test_setting_values() -> None:
    assert crawl_private_addresses_allowed({}) is True
    assert crawl_private_addresses_allowed({"QPIPE_CRAWL_PRIVATE_ADDRESSES": "  "}) is True
    assert crawl_private_addresses_allowed({"QPIPE_CRAWL_PRIVATE_ADDRESSES": "allow"}) is True
    assert crawl_private_addresses_allowed({"QPIPE_CRAWL_PRIVATE_ADDRESSES": " Refuse "}) is False
    with pytest.raises(SettingError) as err:
        crawl_private_addresses_allowed({"QPIPE_CRAWL_PRIVATE_ADDRESSES": "no"})
    assert str(err.value) == (
        "QPIPE_CRAWL_PRIVATE_ADDRESSES='no' is invalid: must be allow or refuse"
    )


def test_settings_field_must_be_a_bool() -> None:
    with pytest.raises(ValueError, match="allow_private_addresses must be a bool, got 'no'"):
        CrawlSettings(allow_private_addresses="no")  # type: ignore[arg-type]
    assert (
        CrawlSettings.from_dict({"allow_private_addresses": False}).allow_private_addresses is False
    )


def test_refuse_mode_fetches_nothing_from_loopback(tmp_path: Path) -> None:
    routes = {"/": lambda _n: Reply(body=page("/next")), "/next": lambda _n: Reply(body=page())}
    with serve(routes) as site:
        port = site.url("/").split(":")[2].split("/")[0]
        seeds = [site.url("/"), f"http://localhost:{port}/next"]
        allowed = crawl_subprocess(seeds, FAST, tmp_path / "allowed.arrow", timeout_s=120)
        assert all(r["error"] is None for r in allowed.to_pylist())  # the server works
        hits = sum(site.hits.values())

        guarded = dataclasses.replace(FAST, allow_private_addresses=False)
        table = crawl_subprocess(seeds, guarded, tmp_path / "guarded.arrow", timeout_s=120)
        rows = {r["url"]: r for r in table.to_pylist()}
        expected = (
            "refused: 127.0.0.1 is a loopback address; this crawl connects to public addresses"
            " only (QPIPE_CRAWL_PRIVATE_ADDRESSES=refuse)"
        )
        assert rows[site.url("/")]["error"] == expected
        assert rows[f"http://localhost:{port}/next"]["error"] == expected  # via DNS
        assert all(r["html"] is None and r["status"] is None for r in rows.values())
        assert sum(site.hits.values()) == hits  # not even robots.txt or a retry reached it
