"""Fixtures: the real receiver app under uvicorn on a free loopback port."""

from __future__ import annotations

import base64
import hashlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import jwt
import pytest
import uvicorn

from qpipe_dagster_tests.postgres_cluster import (  # noqa: F401  (fixtures)
    postgres_cluster,
    postgres_url,
)
from webhook_sensor.app import create_app
from webhook_sensor.settings import Settings

CURRENT = "sig_CurrentTestKey0123456789abcdef"
NEXT = "sig_NextTestKey9876543210fedcba9876"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_token(
    key: str, url: str, data: bytes, *, now: float | None = None, alg: str = "HS256", **over
) -> str:
    """A QStash-style token built with PyJWT, independent of the code under test."""
    iat = int(time.time() if now is None else now)
    claims = {
        "iss": "Upstash",
        "sub": url,
        "exp": iat + 300,
        "nbf": 0,
        "iat": iat,
        "jti": "jwt_" + uuid.uuid4().hex,
        "body": base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode(),
    }
    claims.update(over)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key.encode(), algorithm=alg)


@dataclass
class Receiver:
    base: str
    url: str
    settings: Settings
    client: httpx.Client

    def post(self, data: bytes, token: str | None = None, message_id: str | None = None, **hdrs):
        headers = {"Content-Type": "application/json", **hdrs}
        if token is not None:
            headers["Upstash-Signature"] = token
        headers["Upstash-Message-Id"] = message_id or "msg_" + uuid.uuid4().hex
        return self.client.post(self.url, content=data, headers=headers)

    def signed(self, data: bytes, key: str = CURRENT, message_id: str | None = None, **claims):
        return self.post(data, make_token(key, self.url, data, **claims), message_id)


class ServerThread:
    def __init__(self, app, port: int) -> None:
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.time() + 10
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("receiver did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_receiver(tmp: Path, **overrides) -> tuple[ServerThread, Receiver]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/api/qstash"
    home = tmp / "dagster_home"
    home.mkdir(exist_ok=True)
    settings = replace(
        Settings(
            current_signing_key=CURRENT,
            next_signing_key=NEXT,
            receiver_url=url,
            inbox_path=tmp / "inbox.sqlite",
            dagster_home=home,
            using_dev_keys=False,
        ),
        **overrides,
    )
    server = ServerThread(create_app(settings), port)
    return server, Receiver(f"http://127.0.0.1:{port}", url, settings, httpx.Client(timeout=10))


@pytest.fixture(scope="module")
def receiver(tmp_path_factory) -> Iterator[Receiver]:
    server, rcv = start_receiver(tmp_path_factory.mktemp("receiver"), rate_limit_per_s=10_000)
    with server:
        yield rcv
    rcv.client.close()


@pytest.fixture(params=["sqlite", "postgres"])
def inbox_target(request, tmp_path) -> Path | str:
    """An empty inbox location for each backend: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "inbox.sqlite"
    return request.getfixturevalue("postgres_url")


@pytest.fixture(scope="module")
def pg_receiver(tmp_path_factory, request) -> Iterator[Receiver]:
    """The real receiver with its inbox in PostgreSQL (QPIPE_INBOX_URL)."""
    server, rcv = start_receiver(
        tmp_path_factory.mktemp("pg_receiver"),
        inbox_url=request.getfixturevalue("postgres_cluster").new_database(),
        rate_limit_per_s=10_000,
    )
    with server:
        yield rcv
    rcv.client.close()
