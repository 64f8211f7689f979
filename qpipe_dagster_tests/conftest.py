"""Fixtures shared by every test: a private DAGSTER_HOME and static sites on 127.0.0.1."""

from __future__ import annotations

import functools
import shutil
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import settings

# Shared 2-core CI machines stall now and then; a per-example deadline would turn that into
# failures that say nothing about the code. Per-test settings inherit this profile.
settings.register_profile("qpipe", deadline=None)
settings.load_profile("qpipe")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh DAGSTER_HOME: qpipe's registry, asset files and vector store all live under it."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")  # the shipped local config
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    # a production shell's backend switches stay out (registry, instance database, Weaviate)
    for var in ("WEAVIATE_URL", "QPIPE_ASSET_DIR", "QPIPE_LANCE_PATH", "QPIPE_PRICES_DIR",
                "QPIPE_CRAWL_PRIVATE_ADDRESSES", "QPIPE_CONCEPTS_URL", "DAGSTER_PG_HOST",
                "WEAVIATE_BACKUP_PATH"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    return home


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default backlog of 5 stalls Scrapy's bursts for a second


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def demo_site(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A writable copy of the bundled demo site served on 127.0.0.1; yields (base_url, folder)."""
    from qpipe_dagster.demo import SITE_DIR

    folder = tmp_path / "site"
    shutil.copytree(SITE_DIR, folder)
    server = _Server(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", folder
    finally:
        server.shutdown()
        server.server_close()
