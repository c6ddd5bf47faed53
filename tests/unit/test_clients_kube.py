"""The Kubernetes clients (the controllers' `kube`, and the gateway's `gatewaykube` on top of
it) against a local HTTP server standing in for the API server.

The server answers from a script of canned responses and records every request, so the tests
check the wire: paths, verbs, content types, query parameters and bodies, watch streams, and
how each HTTP failure becomes one of Tidal's errors. No cluster, no network beyond 127.0.0.1.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from kubernetes import client as k8s

from tidal.clients import gatewaykube, kube
from tidal.errors import ConflictError, PermanentError, TemporaryError


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class FakeApiServer:
    """Answers each request with the next scripted (status, body, headers); 200 {} when out.

    A body given as bytes is sent as it is (a watch stream); anything else as JSON."""

    port: int = 0
    script: list[tuple[int, Any, dict[str, str]]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)

    def reply(self, status: int, body: Any = None, **headers: str) -> None:
        self.script.append((status, body if body is not None else {}, headers))


def _handler(fake: FakeApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            url = urlsplit(self.path)
            fake.requests.append(
                Request(
                    method=self.command,
                    path=url.path,
                    query=dict(parse_qsl(url.query)),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=json.loads(raw) if raw else None,
                )
            )
            status, body, headers = fake.script.pop(0) if fake.script else (200, {}, {})
            payload = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for key, value in headers.items():
                self.send_header(key.replace("_", "-"), value)
            self.end_headers()
            self.wfile.write(payload)

        # http.server dispatches on these names.
        def do_GET(self) -> None:
            self._serve()

        def do_PATCH(self) -> None:
            self._serve()

        def do_DELETE(self) -> None:
            self._serve()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean

    return Handler


def _kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": server}}],
                "users": [{"name": "fake", "user": {"token": "t"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                "current-context": "fake",
            }
        )
    )
    return path


@pytest.fixture
def connected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Leave the kubernetes client's process-wide default configuration as it was."""
    saved = k8s.Configuration.get_default_copy()
    try:
        yield tmp_path
    finally:
        k8s.Configuration.set_default(saved)
        kube._api_client = None


@pytest.fixture
def api(connected: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApiServer]:
    fake = FakeApiServer()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    fake.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    config = _kubeconfig(connected / "kubeconfig", f"http://127.0.0.1:{fake.port}")
    monkeypatch.setenv("KUBECONFIG", str(config))
    kube.load_config()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


def status_body(code: int, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "code": code,
    }


DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "chat-spot", "namespace": "ml"},
    "spec": {"replicas": 2},
}


def test_apply_is_a_forced_server_side_apply_by_tidal(api: FakeApiServer) -> None:
    api.reply(200, {**DEPLOYMENT, "status": {"readyReplicas": 1}})

    result = kube.apply(DEPLOYMENT)

    assert result["status"] == {"readyReplicas": 1}
    (request,) = api.requests
    assert request.method == "PATCH"
    assert request.path == "/apis/apps/v1/namespaces/ml/deployments/chat-spot"
    assert request.query == {"fieldManager": "tidal", "force": "true"}
    assert request.headers["content-type"] == "application/apply-patch+yaml"
    assert request.headers["authorization"] == "Bearer t"
    assert request.body == DEPLOYMENT


def test_core_and_cluster_scoped_paths(api: FakeApiServer) -> None:
    kube.get_object("v1", "Node", None, "n1")
    kube.get_object("tidal.dev/v1alpha1", "InferenceEndpoint", "ml", "chat")
    assert [r.path for r in api.requests] == [
        "/api/v1/nodes/n1",
        "/apis/tidal.dev/v1alpha1/namespaces/ml/inferenceendpoints/chat",
    ]


def test_a_pod_monitor_is_applied_at_its_group_path(api: FakeApiServer) -> None:
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": "chat", "namespace": "ml"},
    }
    kube.apply(monitor)
    assert api.requests[0].path == "/apis/monitoring.coreos.com/v1/namespaces/ml/podmonitors/chat"


def test_discovery_lists_the_served_resources_and_an_unserved_group_as_none(
    api: FakeApiServer,
) -> None:
    api.reply(
        200,
        {
            "kind": "APIResourceList",
            "groupVersion": "monitoring.coreos.com/v1",
            "resources": [
                {"name": "podmonitors", "kind": "PodMonitor", "namespaced": True},
                {"name": "servicemonitors", "kind": "ServiceMonitor", "namespaced": True},
            ],
        },
    )
    api.reply(404, status_body(404, "the server could not find the requested resource"))

    assert kube.served_resources("monitoring.coreos.com/v1") == {"podmonitors", "servicemonitors"}
    assert kube.served_resources("monitoring.coreos.com/v1") == frozenset()
    assert [(r.method, r.path) for r in api.requests] == [
        ("GET", "/apis/monitoring.coreos.com/v1"),
        ("GET", "/apis/monitoring.coreos.com/v1"),
    ]


def test_discovery_trouble_is_temporary(api: FakeApiServer) -> None:
    api.reply(503, status_body(503, "the server is currently unable to handle the request"))
    with pytest.raises(TemporaryError):
        kube.served_resources("monitoring.coreos.com/v1")


def test_a_missing_object_reads_as_none_and_an_empty_list(api: FakeApiServer) -> None:
    api.reply(404, status_body(404, 'pods "p" not found'))
    api.reply(404, status_body(404, "the server could not find the requested resource"))

    assert kube.get_object("v1", "Pod", "ml", "p") is None
    assert kube.list_pods("ml", {"tidal.dev/endpoint": "chat"}) == []


def test_lists_select_by_label_and_fill_in_kind(api: FakeApiServer) -> None:
    api.reply(200, {"kind": "PodList", "items": [{"metadata": {"name": "p"}}]})

    (pod,) = kube.list_pods("ml", {"b": "2", "a": "1"})

    assert pod == {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}
    assert api.requests[0].path == "/api/v1/namespaces/ml/pods"
    assert api.requests[0].query == {"labelSelector": "a=1,b=2"}


def test_conflicts_are_retried_then_succeed(api: FakeApiServer) -> None:
    api.reply(409, status_body(409, "the object has been modified"))
    api.reply(409, status_body(409, "the object has been modified"))
    api.reply(200, DEPLOYMENT)

    assert kube.apply(DEPLOYMENT) == DEPLOYMENT
    assert len(api.requests) == 3


def test_conflicts_that_persist_are_a_temporary_conflict_error(api: FakeApiServer) -> None:
    for _ in range(4):
        api.reply(409, status_body(409, "the object has been modified"))

    with pytest.raises(ConflictError, match="409"):
        kube.patch_status("apps/v1", "Deployment", "ml", "chat-spot", {"x": 1})
    assert len(api.requests) == 4


@pytest.mark.parametrize("code", [400, 422])
def test_a_rejected_object_is_permanent_with_the_servers_message(
    api: FakeApiServer, code: int
) -> None:
    api.reply(code, status_body(code, 'Deployment.apps "chat-spot" is invalid: spec.replicas'))

    with pytest.raises(PermanentError, match=r"is invalid: spec\.replicas") as info:
        kube.apply(DEPLOYMENT)
    assert not isinstance(info.value, TemporaryError)


@pytest.mark.parametrize(
    ("code", "headers", "delay"),
    [
        (500, {}, 5),
        (500, {"Retry_After": "12"}, 12),
        # urllib3 itself waits out a 429/503 that carries Retry-After; without one, ours waits.
        (429, {}, 5),
        (403, {}, 30),  # RBAC not granted yet: fixable by the installer, not the spec
    ],
)
def test_server_trouble_is_temporary_with_a_delay(
    api: FakeApiServer, code: int, headers: dict[str, str], delay: float
) -> None:
    api.reply(code, status_body(code, "busy"), **headers)

    with pytest.raises(TemporaryError) as info:
        kube.get_object("v1", "Pod", "ml", "p")
    assert info.value.delay == delay


def test_a_refused_connection_is_temporary(
    connected: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on `port` now.
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(connected / "kc", f"http://127.0.0.1:{port}")))
    kube.load_config()

    with pytest.raises(TemporaryError, match="unreachable"):
        kube.get_object("v1", "Pod", "ml", "p")


def test_status_and_annotations_are_merge_patches(api: FakeApiServer) -> None:
    kube.patch_status("tidal.dev/v1alpha1", "InferenceEndpoint", "ml", "chat", {"ready": 1})
    kube.patch_annotations(
        "tidal.dev/v1alpha1", "InferenceEndpoint", "ml", "chat", {"a": "1", "gone": None}
    )

    status, annotations = api.requests
    assert status.path == "/apis/tidal.dev/v1alpha1/namespaces/ml/inferenceendpoints/chat/status"
    assert status.headers["content-type"] == "application/merge-patch+json"
    assert status.body == {"status": {"ready": 1}}
    assert annotations.path == "/apis/tidal.dev/v1alpha1/namespaces/ml/inferenceendpoints/chat"
    assert annotations.headers["content-type"] == "application/merge-patch+json"
    assert annotations.body == {"metadata": {"annotations": {"a": "1", "gone": None}}}


def test_deleting_a_pod_names_the_incarnation(api: FakeApiServer) -> None:
    api.reply(200, {"kind": "Pod"})
    api.reply(404, status_body(404, "not found"))
    api.reply(409, status_body(409, "Precondition failed: UID in precondition: u"))

    assert kube.delete_pod("ml", "p", uid="u") is True
    assert kube.delete_pod("ml", "p", uid="u") is False  # already gone
    assert kube.delete_pod("ml", "p", uid="u") is False  # a new pod took the name

    request = api.requests[0]
    assert request.method == "DELETE"
    assert request.path == "/api/v1/namespaces/ml/pods/p"
    assert request.body == {
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "preconditions": {"uid": "u"},
    }


def test_a_write_to_something_missing_is_retried_later(api: FakeApiServer) -> None:
    api.reply(404, status_body(404, "not found"))
    with pytest.raises(TemporaryError):
        kube.patch_status("tidal.dev/v1alpha1", "InferenceEndpoint", "ml", "chat", {})


def test_an_unreadable_response_is_temporary(api: FakeApiServer) -> None:
    api.reply(200, ["not", "an", "object"])
    with pytest.raises(TemporaryError, match="unexpected response"):
        kube.get_object("v1", "Pod", "ml", "p")


def test_kinds_tidal_does_not_manage_are_refused_before_any_request(api: FakeApiServer) -> None:
    with pytest.raises(PermanentError, match="does not manage"):
        kube.get_object("batch/v1", "CronJob", "ml", "j")
    assert api.requests == []


# --- watches ------------------------------------------------------------------------------------


def stream(*events: dict[str, Any]) -> bytes:
    """A watch response body: one JSON event a line."""
    return b"".join(json.dumps(event).encode() + b"\n" for event in events)


POD = {"metadata": {"name": "p", "resourceVersion": "8"}}


def test_a_watch_yields_each_change_from_the_version_asked_for(api: FakeApiServer) -> None:
    bookmark = {"metadata": {"resourceVersion": "9"}}
    api.reply(
        200,
        stream(
            {"type": "ADDED", "object": POD},
            {"type": "MODIFIED", "object": POD},
            {"type": "BOOKMARK", "object": bookmark},
        ),
    )

    events = list(
        kube.watch(
            "/api/v1/pods", [("labelSelector", "a=1")], "7", threading.Event(), timeout_seconds=30
        )
    )

    assert events == [("ADDED", POD), ("MODIFIED", POD), ("BOOKMARK", bookmark)]
    (request,) = api.requests
    assert (request.method, request.path) == ("GET", "/api/v1/pods")
    assert request.query == {
        "labelSelector": "a=1",
        "watch": "true",
        "allowWatchBookmarks": "true",
        "timeoutSeconds": "30",
        "resourceVersion": "7",
    }


def test_a_watch_ends_when_asked_to_stop(api: FakeApiServer) -> None:
    api.reply(200, stream({"type": "ADDED", "object": POD}))
    stop = threading.Event()
    stop.set()

    assert list(kube.watch("/api/v1/pods", [], "", stop, timeout_seconds=30)) == []
    assert "resourceVersion" not in api.requests[0].query  # none given: from now


@pytest.mark.parametrize(
    "reply",
    [
        # What the watch cache sends for a compacted version: a 200 and then an ERROR event.
        (200, stream({"type": "ERROR", "object": status_body(410, "too old resource version")})),
        (410, status_body(410, "too old resource version")),
    ],
)
def test_a_compacted_version_means_list_again(api: FakeApiServer, reply: tuple[int, Any]) -> None:
    api.reply(*reply)

    with pytest.raises(kube.ExpiredError, match="too old"):
        list(kube.watch("/api/v1/pods", [], "1", threading.Event(), timeout_seconds=30))


@pytest.mark.parametrize(
    "reply",
    [
        (200, stream({"type": "ERROR", "object": status_body(500, "etcd leader changed")})),
        (200, stream({"type": "ERROR", "object": status_body(404, "gone")})),
        (200, b"{not json\n"),
        (404, status_body(404, "the server could not find the requested resource")),
        (500, status_body(500, "busy")),
    ],
)
def test_other_watch_failures_are_temporary(api: FakeApiServer, reply: tuple[int, Any]) -> None:
    api.reply(*reply)

    with pytest.raises(TemporaryError) as info:
        list(kube.watch("/api/v1/pods", [], "1", threading.Event(), timeout_seconds=30))
    assert not isinstance(info.value, kube.ExpiredError)


# --- the gateway's client -----------------------------------------------------------------------


def test_the_gateway_lists_endpoints_and_their_pods_with_a_version_to_watch_from(
    api: FakeApiServer,
) -> None:
    api.reply(
        200, {"items": [{"metadata": {"name": "chat"}}], "metadata": {"resourceVersion": "5"}}
    )
    api.reply(200, {"items": [], "metadata": {}})

    assert gatewaykube.endpoints("ml").list_all() == ([{"metadata": {"name": "chat"}}], "5")
    assert gatewaykube.pods("app=x").list_all() == ([], "")

    endpoints, pods = api.requests
    assert endpoints.path == "/apis/tidal.dev/v1alpha1/namespaces/ml/inferenceendpoints"
    assert endpoints.query == {}
    assert pods.path == "/api/v1/pods"
    assert pods.query == {"labelSelector": "app=x"}


def test_the_gateway_watches_for_a_bounded_time_and_relists_on_a_compacted_version(
    api: FakeApiServer,
) -> None:
    api.reply(200, stream({"type": "ADDED", "object": POD}))
    api.reply(200, stream({"type": "ERROR", "object": status_body(410, "too old")}))
    source = gatewaykube.pods("app=x", "ml")

    assert list(source.watch("7", threading.Event())) == [("ADDED", POD)]
    # The gateway's informers catch this one to list again (tidal.gateway.watching).
    with pytest.raises(gatewaykube.WatchExpiredError):
        list(source.watch("7", threading.Event()))

    request = api.requests[0]
    assert request.path == "/api/v1/namespaces/ml/pods"
    assert request.query["labelSelector"] == "app=x"
    assert request.query["timeoutSeconds"] == str(gatewaykube.WATCH_SECONDS)


def test_the_gateway_writes_only_annotations_with_a_merge_patch(api: FakeApiServer) -> None:
    gatewaykube.annotate_endpoint("ml", "chat", {"tidal.dev/wake-requested-at": "t", "x": None})

    (request,) = api.requests
    assert request.method == "PATCH"
    assert request.path == "/apis/tidal.dev/v1alpha1/namespaces/ml/inferenceendpoints/chat"
    assert request.headers["content-type"] == "application/merge-patch+json"
    assert request.body == {
        "metadata": {"annotations": {"tidal.dev/wake-requested-at": "t", "x": None}}
    }


def test_the_connection_pool_holds_as_many_connections_as_callers(
    connected: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _kubeconfig(connected / "kubeconfig", "http://127.0.0.1:1")
    monkeypatch.setenv("KUBECONFIG", str(config))
    kube.load_config(pool_size=40)
    assert kube._api_client is not None
    assert kube._api_client.configuration.connection_pool_maxsize == 40
    assert kube._api_client.rest_client.pool_manager.connection_pool_kw["maxsize"] == 40
    kube.load_config()
    assert kube._api_client.configuration.connection_pool_maxsize == kube.POOL_SIZE
