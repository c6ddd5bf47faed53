"""E2E fixtures: a real API server, Tidal's CRDs, and the operator running as a process.

The suite needs only a KUBECONFIG. With `E2E_KUBECONFIG` set it uses that cluster (kind, or a
`tidal dev up` you keep running); otherwise it starts the embedded local control plane
(etcd + kube-apiserver + controller-manager + scheduler + KWOK) in a temporary folder and stops
it at the end. Every process a fixture starts, it stops. When a test fails, the operator's log
and the test namespace's Events are printed.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import processes
from tests.e2e.kube import Kube
from tests.e2e.processes import free_port
from tests.e2e.qdrant import Qdrant, QdrantMissingError, running_qdrant
from tests.e2e.s3 import S3Server, running_s3

REPO = Path(__file__).resolve().parents[2]
# The operator's hysteresis before replicas return to spot after a loss (default minutes),
# shortened so the spot-return test finishes quickly.
SPOT_RETURN_AFTER_SECONDS = 20


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.e2e)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"report_{report.when}", report)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Skipped e2e tests count as failures: a green run must have exercised the cluster. And
    nothing a fixture started may outlive the run: a child process still alive here (every
    fixture has been torn down) is named, and fails the run."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if skipped and not os.environ.get("TIDAL_E2E_ALLOW_SKIP"):
        print(f"\nERROR: {skipped} e2e test(s) skipped; e2e tests must run", file=sys.stderr)
        session.exitstatus = 1
    left = processes.live_children(os.getpid())
    if left:
        named = "; ".join(f"{pid}: {command}" for pid, command in left)
        print(f"\nERROR: processes started by the e2e run outlive it: {named}", file=sys.stderr)
        session.exitstatus = 1


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    given = os.environ.get("E2E_KUBECONFIG")
    if given:
        yield Kube(Path(given), _kubectl_binary())
        return
    from tidal.devcluster import cluster

    workdir = tmp_path_factory.mktemp("cluster")
    state = cluster.up(workdir, bind_to_parent=True)
    try:
        yield Kube(state.kubeconfig, Path(state.bin_dir) / "kubectl", workdir=workdir)
    finally:
        cluster.down(workdir)


def _kubectl_binary() -> Path:
    from tidal.devcluster import build

    local = build.bin_dir() / "kubectl"
    if local.exists():
        return local
    found = subprocess.run(["which", "kubectl"], capture_output=True, text=True, check=False)
    if found.returncode != 0:
        pytest.fail("E2E_KUBECONFIG is set but no kubectl is on PATH (or run `tidal dev build`)")
    return Path(found.stdout.strip())


@pytest.fixture(scope="session")
def qdrant() -> Iterator[Qdrant]:
    """A real Qdrant (tests/e2e/qdrant.py) for the session; a missing binary fails, never skips."""
    with contextlib.ExitStack() as stack:
        missing = ""
        try:
            server = stack.enter_context(running_qdrant())
        except QdrantMissingError as exc:
            missing = str(exc)
        if missing:
            pytest.fail(missing, pytrace=False)
        yield server


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """A real S3 server (versitygw, tests/e2e/s3.py) for the session."""
    with running_s3() as server:
        yield server


@pytest.fixture(scope="session")
def crds(kube: Kube) -> None:
    install_crds(kube)


def install_crds(kube: Kube) -> None:
    """Tidal's CRDs, applied and Established."""
    kube.run("apply", "--server-side", "--force-conflicts", "-k", str(REPO / "crds"))
    kube.run(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/inferenceendpoints.tidal.dev",
        "crd/vectorcollections.tidal.dev",
    )


# The operator's measurement window and the least time between two measurements of one
# endpoint (defaults 300 s and 30 s), shortened so SLO changes show within seconds.
SLO_WINDOW_SECONDS = 15
SLO_INTERVAL_SECONDS = 5
# How often the operator re-reads its tidal-pricing ConfigMap (default 60 s).
PRICING_REFRESH_SECONDS = 3
# The vector SLO probe: at most every 10 s per collection, up to 500 stored vectors each.
VECTOR_SLO_INTERVAL_SECONDS = 10
VECTOR_SLO_SAMPLE = 500


class Operator:
    """`tidal run` as a child process, logging to a file.

    It is told where Prometheus will be (`prometheus_port`) though nothing listens there until
    a test that needs one starts it (tests/e2e/test_slo_cost.py): until then every endpoint's
    SLOMet is Unknown, which is what an unreachable Prometheus must give. Its own namespace
    (`namespace`, for the tidal-pricing ConfigMap) is unique to the session and created by the
    tests that need it; its /metrics listens on `metrics_port`.
    """

    def __init__(self, kube: Kube, log: Path, env: dict[str, str] | None = None) -> None:
        self.kube = kube
        self.log = log
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.prometheus_port = free_port()
        self.metrics_port = free_port()
        self.namespace = f"tidal-e2e-{uuid.uuid4().hex[:6]}"

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    def start(self) -> None:
        env = dict(os.environ)
        env.update(
            KUBECONFIG=str(self.kube.kubeconfig),
            TIDAL_RECONCILE_INTERVAL_SECONDS="5",
            TIDAL_SPOT_RETURN_AFTER_SECONDS=str(SPOT_RETURN_AFTER_SECONDS),
            # Spot replicas unscheduled this long count as spot loss (default 180 s).
            TIDAL_SPOT_PENDING_SECONDS="15",
            TIDAL_PROMETHEUS_URL=self.prometheus_url,
            TIDAL_PROMETHEUS_TIMEOUT_SECONDS="2",
            TIDAL_SLO_WINDOW_SECONDS=str(SLO_WINDOW_SECONDS),
            TIDAL_SLO_INTERVAL_SECONDS=str(SLO_INTERVAL_SECONDS),
            TIDAL_PRICING_REFRESH_SECONDS=str(PRICING_REFRESH_SECONDS),
            # VectorCollections with spec.slo: probe often, and every point of the tests' small
            # collections (so the test can recompute the same sample's recall offline).
            TIDAL_VECTOR_SLO_INTERVAL_SECONDS=str(VECTOR_SLO_INTERVAL_SECONDS),
            TIDAL_VECTOR_SLO_SAMPLE=str(VECTOR_SLO_SAMPLE),
            TIDAL_NAMESPACE=self.namespace,
            TIDAL_METRICS_PORT=str(self.metrics_port),
            TIDAL_LOG_FORMAT="plain",
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tidal.cli", "run"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )

    def stop(self) -> None:
        if self.proc is None:
            return
        processes.stop(self.proc, timeout=20)
        self.proc = None

    def tail(self, lines: int = 150) -> str:
        if not self.log.exists():
            return "(no operator log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="session")
def operator(
    kube: Kube, crds: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    op = Operator(kube, tmp_path_factory.mktemp("operator") / "operator.log")
    op.start()
    try:
        yield op
    finally:
        op.stop()


@pytest.fixture
def namespace(kube: Kube, operator: Operator, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    kube.run("create", "namespace", name)
    try:
        yield name
    finally:
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            _dump(kube, operator, name)
        kube.run("delete", "namespace", name, "--wait=false", check=False)


def _dump(kube: Kube, operator: Operator, namespace: str) -> None:
    print(f"\n===== operator log (tail) =====\n{operator.tail()}", file=sys.stderr)
    events = kube.run("get", "events", "-n", namespace, "--sort-by=.lastTimestamp", check=False)
    print(f"===== events in {namespace} =====\n{events}", file=sys.stderr)
    objects = kube.run("get", "tidal,deploy,svc,pods", "-n", namespace, "-o", "wide", check=False)
    print(f"===== objects in {namespace} =====\n{objects}", file=sys.stderr)


def wait_for(what: str, check: Any, timeout: float = 120, interval: float = 0.5) -> Any:
    """Poll `check()` until it returns something truthy; fail naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {last!r}")
