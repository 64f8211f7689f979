"""The Weaviate store's calls go through retries and the `weaviate@host:port` circuit breaker,
tested against a loopback server that answers like Weaviate (REST on one port, gRPC on another:
a real Weaviate cannot run here) and is made to fail: 503s that end, a server that stays down,
gRPC DEADLINE_EXCEEDED, and the caller's errors (4xx, INVALID_ARGUMENT) that must not count."""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from qpipe_dagster.resilience import breakers, guard
from qpipe_dagster.resilience.breakers import by_system, read_states
from qpipe_dagster.resilience.transient import is_transient, weaviate_batch_failure_transient
from qpipe_dagster.store.objects import VectorStoreError
from qpipe_dagster.store.weaviate import WeaviateStore
from qpipe_dagster_tests.store.store_testdata import make_objects

DIM = 4
# What a Weaviate 1.30 answers for a collection's config beyond what the client sent to create it
_CLASS_DEFAULTS = {
    "invertedIndexConfig": {
        "bm25": {"b": 0.75, "k1": 1.2},
        "cleanupIntervalSeconds": 60,
        "stopwords": {"preset": "en", "additions": None, "removals": None},
    },
    "multiTenancyConfig": {"enabled": False},
    "replicationConfig": {"factor": 1, "deletionStrategy": "NoAutomatedResolution"},
    "shardingConfig": {
        "virtualPerPhysical": 128, "desiredCount": 1, "actualCount": 1,
        "desiredVirtualCount": 128, "actualVirtualCount": 128, "key": "_id", "strategy": "hash",
        "function": "murmur3",
    },
    "vectorizer": "none",
}  # fmt: skip
_HNSW_DEFAULTS = {
    "cleanupIntervalSeconds": 300, "distance": "cosine", "dynamicEfMin": 100,
    "dynamicEfMax": 500, "dynamicEfFactor": 8, "ef": -1, "efConstruction": 128,
    "flatSearchCutoff": 40000, "maxConnections": 32, "skip": False,
    "vectorCacheMaxObjects": 1_000_000_000_000,
    "multivector": {"enabled": False, "aggregation": "maxSim"},
}  # fmt: skip


class FakeWeaviate:
    """REST (http.server) and gRPC (grpc.server, with the standard health service) on 127.0.0.1.

    `http_fail` REST requests are answered `http_status` (503: restarting) before it answers
    like Weaviate; `grpc_fail[method]` calls of a gRPC method are aborted with `grpc_code`.
    Every request is recorded (time, method, path) so a test sees each attempt.
    """

    def __init__(self) -> None:
        from weaviate.proto.v1 import aggregate_pb2, batch_pb2, search_get_pb2, weaviate_pb2_grpc

        self.http_fail = 0
        self.http_status = 503
        self.status_for: dict[tuple[str, str], int] = {}  # (method, path) -> a fixed answer
        self.grpc_fail: dict[str, int] = {}
        self.grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED
        self.requests: list[tuple[float, str, str]] = []
        self.grpc_calls: list[str] = []
        self.classes: dict[str, dict] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, code: int, body: object = None) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(size)) if size else None
                path = self.path.split("?", 1)[0]
                outer.requests.append((time.monotonic(), method, path))
                if outer.http_fail > 0:
                    outer.http_fail -= 1
                    return self._answer(outer.http_status, {"error": [{"message": "down"}]})
                if (method, path) in outer.status_for:
                    code = outer.status_for[method, path]
                    return self._answer(code, {"error": [{"message": f"refused ({code})"}]})
                if path == "/v1/meta":
                    return self._answer(200, {"version": "1.30.0", "modules": {}})
                if path == "/v1/.well-known/openid-configuration":
                    return self._answer(404)  # no OIDC: anonymous access
                if path.startswith("/v1/schema/") and method == "GET":
                    found = outer.classes.get(path.rsplit("/", 1)[1])
                    return self._answer(200, found) if found else self._answer(404)
                if path == "/v1/schema" and method == "POST":
                    assert isinstance(body, dict)
                    body = {**_CLASS_DEFAULTS, **body}
                    for vec in body.get("vectorConfig", {}).values():
                        vec["vectorIndexConfig"] = {
                            **_HNSW_DEFAULTS,
                            **vec.get("vectorIndexConfig", {}),
                        }
                    for prop in body["properties"]:
                        text = prop["dataType"] == ["text"]
                        prop.setdefault("tokenization", "word" if text else None)
                        prop.setdefault("indexFilterable", True)
                        prop.setdefault("indexSearchable", text)
                        prop.setdefault("indexRangeFilters", False)
                    outer.classes[body["class"]] = body
                    return self._answer(200, body)
                return self._answer(404)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def log_message(self, *args: object) -> None:
                pass

        def failing(name: str, context: grpc.ServicerContext) -> None:
            outer.grpc_calls.append(name)
            if outer.grpc_fail.get(name, 0) > 0:
                outer.grpc_fail[name] -= 1
                # the details gRPC itself gives a call whose deadline passed
                deadline = outer.grpc_code == grpc.StatusCode.DEADLINE_EXCEEDED
                context.abort(outer.grpc_code, "Deadline Exceeded" if deadline else "bad request")

        class Servicer(weaviate_pb2_grpc.WeaviateServicer):
            def Search(self, request, context):
                failing("Search", context)
                return search_get_pb2.SearchReply()

            def Aggregate(self, request, context):
                failing("Aggregate", context)
                return aggregate_pb2.AggregateReply()

            def BatchObjects(self, request, context):
                failing("BatchObjects", context)
                return batch_pb2.BatchObjectsReply()

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        checks = health.HealthServicer()
        checks.set("", health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(checks, self.grpc)
        weaviate_pb2_grpc.add_WeaviateServicer_to_server(Servicer(), self.grpc)
        self.grpc_port = self.grpc.add_insecure_port("127.0.0.1:0")
        self.grpc.start()
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        self.system = f"weaviate@127.0.0.1:{self.http.server_address[1]}"

    def hits(self, path: str = "/v1/meta") -> list[float]:
        return [t for t, _, p in self.requests if p == path]

    def open(self) -> WeaviateStore:
        return WeaviateStore(url=self.url, model="m", dim=DIM, grpc_port=self.grpc_port)

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.grpc.stop(None)


@pytest.fixture
def fake(dagster_home: Path) -> Iterator[FakeWeaviate]:
    """A fake server, and breakers of this test's own (they live in DAGSTER_HOME)."""
    server = FakeWeaviate()
    yield server
    server.close()


def _state(system: str = "weaviate") -> breakers.BreakerState | None:
    return by_system(read_states()).get(system)


@pytest.fixture
def quick_breaker(monkeypatch: pytest.MonkeyPatch) -> float:
    """Two attempts per call and a 1.5 s reset: the breaker opens and half-opens in seconds."""
    monkeypatch.setattr(guard, "ATTEMPTS", 2)
    monkeypatch.setattr(breakers, "RESET_TIMEOUT_S", 1.5)
    return 1.5


def test_opening_the_store_rides_out_503s_with_growing_waits(fake: FakeWeaviate) -> None:
    fake.http_fail = 3  # /v1/meta, the client's first request on connect, answers 503 3 times
    with fake.open() as store:
        assert store.search(np.ones(DIM, np.float32), k=3) == []
        assert store.count() == 0
    meta = fake.hits("/v1/meta")
    assert len(meta) == 4  # three 503s, retried, then through
    gaps = [b - a for a, b in itertools.pairwise(meta)]
    # exponential backoff: each wait at least its floor (0.2, 0.4, 0.8 s; jitter only adds)
    assert all(g >= 0.2 * 2**i for i, g in enumerate(gaps)), gaps
    assert fake.hits("/v1/.well-known/openid-configuration")  # server checks still made
    state = _state()
    assert state is not None and state.state == "closed" and state.fail_counter == 0
    assert fake.system in read_states()


def test_a_down_weaviate_opens_the_breaker_fails_fast_and_a_half_open_probe_recovers(
    fake: FakeWeaviate, quick_breaker: float, dagster_home: Path
) -> None:
    from qpipe_dagster.ops.doctor import FAIL, OK, check_breakers

    fake.http_fail = 10**6
    for _ in range(breakers.FAIL_MAX):
        with pytest.raises(VectorStoreError, match=r"is unreachable: .*503"):
            fake.open()
    assert len(fake.hits()) == breakers.FAIL_MAX * guard.ATTEMPTS  # each call retried
    made = len(fake.requests)
    started = time.monotonic()
    with pytest.raises(VectorStoreError) as refused:
        fake.open()
    assert time.monotonic() - started < 1.0  # at once, no retries against a dead server
    assert len(fake.requests) == made  # not a single request
    assert re.search(
        rf"Weaviate server '{re.escape(fake.url)}': circuit breaker for "
        rf"{re.escape(fake.system)} is open since 20\S+ after 5 failed calls in a row: calls "
        r"are refused until 20\S+ \(2 s after it opened\)",
        str(refused.value),
    ), refused.value
    state = _state()
    assert state is not None and state.state == "open"
    assert state.fail_counter == breakers.FAIL_MAX
    doctor = check_breakers({"DAGSTER_HOME": str(dagster_home)})
    assert doctor.status == FAIL and "weaviate open since 20" in doctor.detail

    time.sleep(quick_breaker + 0.2)  # reset timeout: one trial call, still down: open again
    with pytest.raises(VectorStoreError, match="503"):
        fake.open()
    assert len(fake.requests) == made + guard.ATTEMPTS
    with pytest.raises(VectorStoreError, match="circuit breaker for weaviate@"):
        fake.open()
    assert len(fake.requests) == made + guard.ATTEMPTS

    fake.http_fail = 0  # recovered
    time.sleep(quick_breaker + 0.2)
    with fake.open() as store:  # the half-open probe (connect) goes through and closes it
        assert store.count() == 0
    state = _state()
    assert state is not None and state.state == "closed" and state.fail_counter == 0
    assert check_breakers({"DAGSTER_HOME": str(dagster_home)}).status == OK


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/v1/meta", 401), ("POST", "/v1/schema", 422)],
    ids=["meta-401", "create-422"],
)
def test_the_callers_errors_are_not_retried_and_never_open_the_breaker(
    fake: FakeWeaviate, method: str, path: str, status: int
) -> None:
    fake.status_for[method, path] = status
    for _ in range(breakers.FAIL_MAX + 1):
        with pytest.raises(VectorStoreError, match=str(status)):
            fake.open()
    sent = [p for _, m, p in fake.requests if (m, p) == (method, path)]
    assert len(sent) == breakers.FAIL_MAX + 1  # one request per call: no retries
    state = _state()
    assert state is None or (state.state == "closed" and state.fail_counter == 0)


def test_grpc_deadline_exceeded_is_retried_and_invalid_argument_is_not(
    fake: FakeWeaviate,
) -> None:
    with fake.open() as store:
        fake.grpc_calls.clear()
        fake.grpc_fail["Search"] = 2
        assert store.search(np.ones(DIM, np.float32), k=3) == []
        assert fake.grpc_calls == ["Search"] * 3  # two DEADLINE_EXCEEDED, then through

        fake.grpc_calls.clear()
        fake.grpc_code = grpc.StatusCode.INVALID_ARGUMENT
        fake.grpc_fail["Aggregate"] = 1
        with pytest.raises(Exception, match="bad request") as bad:
            store.count()
        assert not is_transient(bad.value)
        assert fake.grpc_calls == ["Aggregate"]  # the caller's error: sent once
    state = _state()
    assert state is not None and state.state == "closed" and state.fail_counter == 0


def test_a_batch_the_server_dropped_is_sent_again(fake: FakeWeaviate) -> None:
    """The fixed-size batch swallows the gRPC error into failed_objects; a batch that failed
    whole for a transient reason is written again (its UUIDs are deterministic)."""
    with fake.open() as store:
        fake.grpc_fail["BatchObjects"] = 1  # DEADLINE_EXCEEDED: the client does not retry it
        counts = store.upsert(make_objects("c", 3, DIM))
    assert (counts.inserted, counts.updated, counts.unchanged) == (3, 0, 0)
    assert fake.grpc_calls.count("BatchObjects") == 2


def test_weaviate_error_classification() -> None:
    """A validation error in one object of a batch is the caller's, whatever the others say."""
    import httpx
    from weaviate.exceptions import (
        UnexpectedStatusCodeError,
        WeaviateConnectionError,
        WeaviateQueryError,
        WeaviateStartUpError,
    )

    def status(code: int) -> UnexpectedStatusCodeError:
        return UnexpectedStatusCodeError(
            "x", httpx.Response(code, request=httpx.Request("GET", "http://h"))
        )

    assert all(is_transient(status(c)) for c in (429, 500, 502, 503, 504))
    assert not any(is_transient(status(c)) for c in (400, 401, 403, 404, 422))
    try:
        raise WeaviateStartUpError("Could not connect") from WeaviateConnectionError("refused")
    except WeaviateStartUpError as exc:
        assert is_transient(exc)
    assert not is_transient(WeaviateStartUpError("Weaviate version 1.20 is not supported"))
    assert not is_transient(WeaviateQueryError("no such property", "GRPC search"))
    down = (
        "WeaviateBatchError('Query call with protocol GRPC batch failed with message Deadline"
        " Exceeded.')"
    )
    assert weaviate_batch_failure_transient([down, down])
    assert not weaviate_batch_failure_transient([down, "invalid date property 'fetched_at'"])
    assert not weaviate_batch_failure_transient([])
