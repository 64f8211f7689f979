"""The pure link rules that decide what gets crawled."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qpipe_dagster.crawl.urls import (
    dedupe_key,
    filter_links,
    normalize_url,
    redirect_fault,
    site_of,
    validate_seeds,
)


@pytest.mark.parametrize(
    ("href", "base", "expected"),
    [
        ("/a#frag", "http://x.org/dir/", "http://x.org/a"),
        ("b?q=1#x", "http://x.org/dir/page", "http://x.org/dir/b?q=1"),
        ("HTTP://X.ORG:80", None, "http://x.org/"),
        ("https://x.org:443/p", None, "https://x.org/p"),
        ("https://x.org:8443/p", None, "https://x.org:8443/p"),
        ("//cdn.x.org/s", "https://x.org/", "https://cdn.x.org/s"),
        ("  /spaced path ", "http://x.org/", "http://x.org/spaced%20path"),
        ("http://[::1]:8080/v6", None, "http://[::1]:8080/v6"),
        ("/caf\u00e9", "http://x.org/", "http://x.org/caf%C3%A9"),
    ],
)
def test_normalize_url(href: str, base: str | None, expected: str) -> None:
    assert normalize_url(href, base) == expected


@pytest.mark.parametrize(
    "href",
    [
        "mailto:a@b.org",
        "javascript:void(0)",
        "data:text/html,hi",
        "ftp://x.org/f",
        "http://",
        "http://[broken-ipv6/",
        "http://x.org:99999/",
        "http://x.org:port/",
        "http://user:pw@x.org/",
        "",
        "   ",
        "/a\nb",
        "relative-without-base",
    ],
)
def test_normalize_url_rejects(href: str) -> None:
    assert normalize_url(href) is None


@given(st.text(max_size=60), st.sampled_from([None, "http://x.org/a/", "https://y.org"]))
def test_normalize_url_never_raises_and_is_idempotent(href: str, base: str | None) -> None:
    url = normalize_url(href, base)
    if url is not None:
        assert url.startswith(("http://", "https://")) and "#" not in url
        assert normalize_url(url) == url


def test_site_of_ignores_www_port_and_scheme() -> None:
    assert site_of("https://www.x.org:8443/a") == site_of("http://x.org/") == "x.org"
    assert site_of("http://blog.x.org/") == "blog.x.org"


def test_filter_links_same_site_dedup_in_order() -> None:
    hrefs = [
        "/b",
        "/a#top",
        "/a",
        "http://www.x.org/c",
        "http://other.org/x",
        "http://blog.x.org/",
        "mailto:me@x.org",
        "/q?b=2&a=1",
        "/q?a=1&b=2",
    ]
    assert filter_links(hrefs, "http://x.org/", "x.org") == [
        "http://x.org/b",
        "http://x.org/a",
        "http://www.x.org/c",
        "http://x.org/q?b=2&a=1",
    ]


def test_dedupe_key_equates_query_order_and_fragment() -> None:
    assert dedupe_key("http://x.org/p?b=2&a=1#f") == dedupe_key("http://x.org/p?a=1&b=2")


def test_validate_seeds_normalises_and_dedups() -> None:
    assert validate_seeds(["HTTP://X.org", "http://x.org/#a", "https://y.org/p"]) == [
        "http://x.org/",
        "https://y.org/p",
    ]


@pytest.mark.parametrize(
    ("seeds", "message"),
    [
        ("http://x.org/", "seeds must be a list of URLs, got str"),
        (None, "seeds must be a list of URLs, got NoneType"),
        ([], "no seed URLs given"),
        (["http://ok.org/", "x.org"], "invalid seed URL 'x.org': only absolute http"),
        (["file:///etc/passwd"], "invalid seed URL 'file:///etc/passwd'"),
        (["http://[::1"], "invalid seed URL 'http://\\[::1': not a valid absolute URL"),
        ([""], "invalid seed URL '': empty"),
        ([42], "invalid seed URL 42: not a string"),
    ],
)
def test_validate_seeds_errors_name_the_bad_url(seeds: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_seeds(seeds)


@pytest.mark.parametrize(
    ("seed", "message"),
    [
        # these used to pass validation and fail at crawl time ("ValueError: Invalid URI ...")
        # or as a DNS failure, instead of being refused before any request
        ("http://exa mple.com/", "invalid host name 'exa mple.com'"),
        ("http://a..b.org/", "invalid host name 'a..b.org'"),
        ("http://.x.org/", "invalid host name '.x.org'"),
        ("http://x.org:0/", "port 0"),
        ("http://x.org/\ud800", "lone surrogate"),
    ],
)
def test_malformed_hosts_are_refused_naming_the_fault(seed: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"invalid seed URL .*: .*{message}"):
        validate_seeds([seed])
    assert normalize_url(seed) is None


def test_idn_uppercase_and_fqdn_seeds_still_accepted() -> None:
    seeds = [
        "http://Bücher.example/Straße",
        "http://\u2603.net/",
        "http://x.org./",
        "http://x_y.org/",
    ]
    assert validate_seeds(seeds) == [
        "http://xn--bcher-kva.example/Stra%C3%9Fe",
        "http://xn--n3h.net/",
        "http://x.org./",
        "http://x_y.org/",
    ]


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/next", None),
        ("https://www.example.com/x", None),
        ("//example.org/y", None),
        ("mailto:a@example.com", "only absolute http:// or https:// URLs with a host are crawled"),
        ("ftp://example.com/f", "only absolute http:// or https:// URLs with a host are crawled"),
        ("http://[1::2::3]/", "not a valid absolute URL"),
        ("http://user:pw@example.com/", "embedded credentials (user:password@) are not crawled"),
        ("", "empty target (the page redirects to itself)"),
    ],
)
def test_redirect_fault(target: str, expected: str | None) -> None:
    fault = redirect_fault(target, "http://example.com/page")
    if expected is None:
        assert fault is None
    else:
        assert fault is not None and fault.startswith(expected), fault
