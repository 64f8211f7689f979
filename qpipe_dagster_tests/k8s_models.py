"""Kubernetes manifests checked the way the API server reads them, with the official client's
models: every field must exist in the model (a typo is an error here, not silently dropped
by the server), and the result is deserialized into the model class (required fields checked)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import kubernetes.client
from kubernetes.client import ApiClient

_PRIMITIVES = {"str", "int", "float", "bool", "object", "datetime", "date"}


class ManifestError(AssertionError):
    """A field the Kubernetes API does not have; names its path."""


def _walk(value: Any, type_name: str, path: str) -> None:
    if value is None or type_name in _PRIMITIVES:
        return
    if type_name.startswith("list["):
        if not isinstance(value, list):
            raise ManifestError(f"{path}: expected a list, got {value!r}")
        for i, item in enumerate(value):
            _walk(item, type_name[5:-1], f"{path}[{i}]")
        return
    if type_name.startswith(("dict(", "dict[")):  # dict(str, str) or dict[str, str]
        inner = type_name[type_name.index(",") + 1 : -1].strip()
        if not isinstance(value, dict):
            raise ManifestError(f"{path}: expected a mapping, got {value!r}")
        for key, item in value.items():
            _walk(item, inner, f"{path}.{key}")
        return
    cls = getattr(kubernetes.client.models, type_name)
    if not isinstance(value, dict):
        raise ManifestError(f"{path}: expected a {type_name} mapping, got {value!r}")
    json_to_attr = {json_key: attr for attr, json_key in cls.attribute_map.items()}
    unknown = sorted(set(value) - set(json_to_attr))
    if unknown:
        raise ManifestError(f"{path}: {type_name} has no field(s) {', '.join(unknown)}")
    for key, item in value.items():
        _walk(item, cls.openapi_types[json_to_attr[key]], f"{path}.{key}")


def load_model(data: dict[str, Any], type_name: str) -> Any:
    """`data` (a manifest as the API receives it) as an instance of kubernetes.client.<type_name>."""
    _walk(data, type_name, data.get("kind", type_name))

    class _Response:
        pass

    response = _Response()
    response.data = json.dumps(data)
    return ApiClient().deserialize(response, type_name)


KINDS = {
    ("batch/v1", "Job"): "V1Job",
    ("apps/v1", "Deployment"): "V1Deployment",
    ("v1", "Service"): "V1Service",
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("policy/v1", "PodDisruptionBudget"): "V1PodDisruptionBudget",
}


def load_manifest(data: dict[str, Any]) -> Any:
    """A manifest of a kind in KINDS, by its apiVersion and kind."""
    key = (data.get("apiVersion"), data.get("kind"))
    if key not in KINDS:
        raise ManifestError(f"unexpected apiVersion/kind {key}; known: {sorted(KINDS)}")
    return load_model(data, KINDS[key])


class _Recorder(BaseHTTPRequestHandler):
    """Answers a create with 201 and the object, as the API server does, keeps what it got, and
    reports a created Job as active."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.created.append((self.path, body))  # type: ignore[attr-defined]
        answer = json.dumps(body).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def do_GET(self) -> None:
        """A created Job's status (read by the launcher's health check): active, one pod."""
        for path, body in self.server.created:  # type: ignore[attr-defined]
            if self.path == f"{path}/{body['metadata']['name']}/status":
                answer = json.dumps({**body, "status": {"active": 1}}).encode()
                self.send_response(200)
                break
        else:
            answer = json.dumps({"kind": "Status", "code": 404, "reason": "NotFound"}).encode()
            self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def recording_k8s_api(folder: Path) -> Iterator[tuple[Path, list[tuple[str, dict]]]]:
    """A stand-in for the Kubernetes API on 127.0.0.1 (no cluster runs here) and a kubeconfig
    naming it; yields (kubeconfig path, [(request path, object as sent)])."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.created = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    kubeconfig = folder / "kubeconfig"
    cluster = {"server": f"http://127.0.0.1:{server.server_port}"}
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "t", "cluster": cluster}],
                "users": [{"name": "t", "user": {"token": "test-token"}}],
                "contexts": [{"name": "t", "context": {"cluster": "t", "user": "t"}}],
                "current-context": "t",
            }
        )
    )
    try:
        yield kubeconfig, server.created  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
