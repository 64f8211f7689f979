"""Fixtures for the browser test: the `e2e` marker, the running stack, Chromium and artefacts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from qpipe_dagster_tests.e2e.browser import LAUNCH_ARGS, find_chromium, why_unavailable
from qpipe_dagster_tests.e2e.stack import REPO, DevStack, start_stack


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "e2e: drives the Dagster UI of `make run`'s stack in a real Chromium"
    )


def pytest_report_header(config: pytest.Config) -> str:
    """Say up front whether the browser test will run, so a skip is never silent."""
    reason = why_unavailable()
    return f"e2e: browser test SKIPS: {reason}" if reason else f"e2e: Chromium {find_chromium()}"


def artifacts_dir() -> Path:
    return Path(os.environ.get("QPIPE_E2E_ARTIFACTS") or REPO / "test-artifacts" / "e2e").resolve()


@pytest.fixture(scope="module")
def artifacts() -> Path:
    """Screenshots and the stack's log land here (fresh for every run)."""
    folder = artifacts_dir()
    if folder.exists():
        for old in folder.iterdir():
            if old.is_file() and old.suffix in {".png", ".log", ".html", ".txt"}:
                old.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


_SKIPPED: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Repeat a browser-test skip at the very end, even under -q without -rs."""
    for reason in _SKIPPED:
        terminalreporter.write_line(f"e2e: the browser test was SKIPPED: {reason}", yellow=True)


@pytest.fixture(scope="module")
def chromium() -> str:
    reason = why_unavailable()
    if reason:
        _SKIPPED.append(reason)
        pytest.skip(f"browser test needs Chromium and Playwright: {reason}")
    return find_chromium()  # type: ignore[return-value]


@pytest.fixture(scope="module")
def stack(
    chromium: str, artifacts: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DevStack]:
    """`make run`'s stack on free ports with a private DAGSTER_HOME; torn down afterwards."""
    home = tmp_path_factory.mktemp("e2e") / "dagster_home"
    running = start_stack(home, artifacts / "devstack.log")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def page(chromium: str, stack: DevStack):  # playwright.sync_api.Page
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=LAUNCH_ARGS)
        context = browser.new_context(viewport={"width": 1600, "height": 1000})
        context.set_default_timeout(30_000)
        try:
            yield context.new_page()
        finally:
            context.close()
            browser.close()
