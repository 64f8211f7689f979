"""QPIPE_CRAWL_PRIVATE_ADDRESSES=refuse at the receiver: seed URLs that are certainly not public
(IP literals of non-public ranges, localhost names) get a 489 that names the URL, over real HTTP;
names that need DNS are left to the crawler's resolver. The default accepts them (make run's
demo site is on 127.0.0.1)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from qpipe_dagster.crawl.addresses import seed_url_fault
from qpipe_dagster_tests.webhook_sensor.conftest import Receiver, start_receiver
from webhook_sensor.inbox import open_inbox


@pytest.fixture(scope="module")
def guarded(tmp_path_factory) -> Iterator[Receiver]:
    server, receiver = start_receiver(tmp_path_factory.mktemp("guarded"), public_seeds_only=True)
    with server:
        yield receiver


def _body(*urls: str) -> bytes:
    return json.dumps({"concept": "inside job", "urls": list(urls)}).encode()


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:8080/admin", "127.0.0.1 is a loopback address"),
        ("http://[::1]/", "::1 is a loopback address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
        ("http://10.0.0.5/", "10.0.0.5 is a private-network address"),
        ("http://[::ffff:192.168.0.1]/", "192.168.0.1 is a private-network address"),
        ("http://localhost:3000/", "localhost is a loopback name"),
        ("http://api.localhost/", "api.localhost is a loopback name"),
    ],
)
def test_non_public_seed_is_refused_naming_it(guarded: Receiver, url: str, why: str) -> None:
    message_id = f"msg_{abs(hash(url))}"
    resp = guarded.signed(_body("https://example.com/ok", url), message_id=message_id)
    assert resp.status_code == 489
    assert resp.headers["Upstash-NonRetryable-Error"] == "true"  # to the DLQ, not retried
    detail = resp.json()["detail"]
    assert detail.startswith(f"seed URL {url!r}: {why}")
    assert detail.endswith("(QPIPE_CRAWL_PRIVATE_ADDRESSES=refuse)")
    inbox = open_inbox(guarded.settings.inbox_path)
    assert inbox.get(message_id) is None


def test_public_seeds_and_names_are_accepted(guarded: Receiver) -> None:
    resp = guarded.signed(_body("https://example.com/", "http://8.8.8.8/", "http://intranet/"))
    assert resp.status_code == 200, resp.text  # `intranet` needs DNS: the crawler decides


def test_default_accepts_loopback_seeds(tmp_path) -> None:
    server, receiver = start_receiver(tmp_path)
    with server:
        resp = receiver.signed(_body("http://127.0.0.1:8765/index.html"))
    assert resp.status_code == 200, resp.text


def test_seed_url_fault_leaves_names_to_dns() -> None:
    assert seed_url_fault("https://example.com/") is None
    assert seed_url_fault("http://intranet.corp/") is None
    assert seed_url_fault("http://LOCALHOST/") == "localhost is a loopback name"
    assert seed_url_fault("http://[::1/") is None  # malformed: the URL rules name it elsewhere
