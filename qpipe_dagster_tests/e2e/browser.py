"""Finding (and, where allowed, installing) the system Chromium that the browser test drives.

Test tools cannot download browsers here, so the test uses the distribution's Chromium through
Playwright's bundled driver. `python -m qpipe_dagster_tests.e2e.browser --install` is what
`make e2e` / `make test` run first: it installs Chromium with apt when it is missing and that is
allowed (root, apt-get present, QPIPE_E2E_INSTALL not 0); otherwise it explains why not, and the
test then skips with that same reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Without the background-networking flags Chromium's own outbound connections get refused in bulk
# on locked-down machines, which stalls page loads; --no-sandbox because tests often run as root.
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def find_chromium() -> str | None:
    """$QPIPE_E2E_CHROMIUM if set, else the first Chromium/Chrome on PATH."""
    override = os.environ.get("QPIPE_E2E_CHROMIUM", "").strip()
    if override:
        return override if Path(override).is_file() and os.access(override, os.X_OK) else None
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def why_unavailable() -> str | None:
    """None when the browser test can run, else a reason a user can act on."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return (
            "Playwright for Python is not installed: `.venv/bin/pip install playwright` "
            "(its wheel carries the driver; no browser download is needed)"
        )
    override = os.environ.get("QPIPE_E2E_CHROMIUM", "").strip()
    if override and find_chromium() is None:
        return f"QPIPE_E2E_CHROMIUM={override!r} is not an executable file"
    if find_chromium() is None:
        return (
            "no Chromium found (looked for " + ", ".join(CANDIDATES) + " on PATH): install it "
            "with `sudo apt-get install -y chromium` (Debian/Ubuntu) or point QPIPE_E2E_CHROMIUM "
            "at a Chromium/Chrome binary"
        )
    return None


def install_allowed() -> str | None:
    """None when an apt install may be attempted, else why not."""
    if os.environ.get("QPIPE_E2E_INSTALL", "1").strip() == "0":
        return "QPIPE_E2E_INSTALL=0"
    if shutil.which("apt-get") is None:
        return "apt-get is not available on this system"
    if os.geteuid() != 0:
        return "not running as root (run `sudo apt-get install -y chromium` once)"
    return None


def ensure_chromium() -> str:
    """Install Chromium with apt when missing and allowed; return a one-line status."""
    found = find_chromium()
    if found:
        return f"e2e: using Chromium at {found}"
    refused = install_allowed()
    if refused:
        return f"e2e: Chromium missing and not installed ({refused}); the browser test will skip"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
    ):
        result = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            return f"e2e: `{' '.join(cmd)}` failed ({tail[0]}); the browser test will skip"
    found = find_chromium()
    return f"e2e: installed Chromium at {found}" if found else "e2e: apt installed no Chromium"


if __name__ == "__main__":
    if "--install" in sys.argv[1:]:
        print(ensure_chromium())
    reason = why_unavailable()
    print(f"e2e: browser test will skip: {reason}" if reason else "e2e: browser test can run")
