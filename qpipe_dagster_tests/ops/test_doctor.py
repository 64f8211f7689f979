"""`qpipe doctor` checks fed bad environments: each one names the variable or path at fault."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from qpipe_dagster.ops.doctor import (
    FAIL,
    OK,
    check_backup_target,
    check_env,
    check_postgres,
    check_vector_store,
    run_checks,
)


@pytest.fixture
def home_file(tmp_path: Path) -> Path:
    path = tmp_path / "dagster_home"
    path.write_text("not a folder")
    return path


def test_dagster_home_that_is_a_file_is_named(home_file: Path) -> None:
    """Old: environment and vector store said OK ('LanceDB .../vectors: empty'), and the backup
    target failed with only "[Errno 20] Not a directory"."""
    env = {"DAGSTER_HOME": str(home_file)}
    by_name = {
        c.name: c for c in run_checks([check_env, check_vector_store, check_backup_target], env)
    }
    assert by_name["environment"].status == FAIL
    assert (
        f"DAGSTER_HOME={str(home_file)!r} is a file, not a folder" in by_name["environment"].detail
    )
    assert by_name["vector store"].status == FAIL
    assert f"{home_file} is a file, not a folder" in by_name["vector store"].detail
    assert by_name["backup target"].status == FAIL
    assert by_name["backup target"].detail.startswith("backup directory ")
    assert f"cannot create ({home_file} is a file, not a folder)" in by_name["backup target"].detail


def test_lance_path_that_is_a_file_fails(tmp_path: Path, home_file: Path) -> None:
    env = {"DAGSTER_HOME": str(tmp_path), "QPIPE_LANCE_PATH": str(home_file)}
    check = check_vector_store(env)
    assert (
        check.status == FAIL
        and check.detail == f"LanceDB path {home_file}: it is a file, not a folder"
    )
    # and a usable one is still OK
    assert check_vector_store({"DAGSTER_HOME": str(tmp_path)}).status == OK


def test_postgres_port_blank_means_default_and_garbage_is_named() -> None:
    """Old: both failed with "invalid literal for int() with base 10"."""
    bad = check_postgres({"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": "abc"})
    assert bad.status == FAIL and bad.detail == "DAGSTER_PG_PORT='abc' is not a port (1-65535)"
    blank = check_postgres({"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": "  "})
    assert "invalid literal" not in blank.detail and "DAGSTER_PG_PORT" not in blank.detail


@pytest.fixture
def weaviate_meta() -> Iterator[tuple[str, list[str | None]]]:
    """A stand-in for Weaviate's /v1/meta on 127.0.0.1 that records the Authorization header."""
    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # http.server's naming
            seen.append(self.headers.get("Authorization"))
            body = json.dumps({"version": "1.30.0", "modules": {"backup-filesystem": {}}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_blank_weaviate_api_key_sends_no_credentials(weaviate_meta) -> None:
    """Old: a blank key became 'Authorization: Bearer    ', which httpx refuses: the check
    FAILed with "Illegal header value" while the start-up check treats the key as unset."""
    url, seen = weaviate_meta
    check = check_vector_store({"WEAVIATE_URL": url, "WEAVIATE_API_KEY": "   "})
    assert check.status == OK, check.detail
    check_vector_store({"WEAVIATE_URL": url, "WEAVIATE_API_KEY": " key "})
    assert seen == [None, "Bearer key"]


def test_dagster_instance_check_names_a_file_home_and_bad_yaml(tmp_path) -> None:
    """Old: a DAGSTER_HOME that is a file was reported as 'no dagster.yaml in DAGSTER_HOME=…',
    and an unparsable dagster.yaml as the YAML parser's bare 'ScannerError: …' with no file."""
    from qpipe_dagster.cli.ops import check_dagster_instance

    a_file = tmp_path / "home.txt"
    a_file.write_text("not a folder")
    check = check_dagster_instance({"DAGSTER_HOME": str(a_file)})
    assert check.status == FAIL and check.detail == f"DAGSTER_HOME={a_file} is a file, not a folder"

    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("run_launcher: [unclosed\n")
    check = check_dagster_instance({"DAGSTER_HOME": str(home)})
    assert check.status == FAIL
    assert check.detail.startswith(f"{home / 'dagster.yaml'} is not valid YAML: ")
    assert "line" in check.detail
