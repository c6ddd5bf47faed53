"""Faults on the local control plane: the operator killed with -9 mid-reconcile under churn,
etcd and kube-apiserver restarted under a running operator, concurrent writers on the objects
the operator writes, and two peered replicas of which exactly one acts.

The session operator is paused for the whole module; each test starts its own operators (see
tests/e2e/reliability.py). `make test-chaos` runs this file alone. Timings are printed and,
with `TIDAL_RELIABILITY_REPORT=<file>`, added to that JSON report (docs/reliability.md).
"""

from __future__ import annotations

import functools
import json
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from tests.e2e.conftest import REPO, Operator, wait_for
from tests.e2e.kube import Kube, condition
from tests.e2e.reliability import OperatorProcess, dump, session_operator_paused

ENDPOINT: dict[str, Any] = yaml.safe_load(
    (REPO / "manifests/samples/inferenceendpoint-llama.yaml").read_text()
)
KILLS = 20
POLICIES = ("Auto", "SpotPreferred", "ReservedOnly", "SpotOnly")
RESULTS: dict[str, Any] = {}
HANDLED = re.compile(r"Handler '[^']+' succeeded")
INVOKED = re.compile(r"Handler '[^']+' is invoked")


def _endpoint(name: str, replicas: int, policy: str = "Auto") -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load(yaml.safe_dump(ENDPOINT))
    obj["metadata"] = {"name": name}
    obj["spec"]["scaling"] = {"minReplicas": replicas, "maxReplicas": max(replicas, 1)}
    obj["spec"]["capacity"] = {"policy": policy}
    obj["spec"].pop("slo", None)
    return obj


@pytest.fixture(scope="module")
def paused(operator: Operator, crds: None) -> Iterator[None]:
    with session_operator_paused(operator):
        yield
    if target := os.environ.get("TIDAL_RELIABILITY_REPORT"):
        path = Path(target)
        report = json.loads(path.read_text()) if path.exists() else {}
        report["chaos"] = RESULTS
        path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(json.dumps(RESULTS, indent=2, sort_keys=True))


@pytest.fixture
def ns(kube: Kube, paused: None) -> Iterator[str]:
    name = f"chaos-{uuid.uuid4().hex[:8]}"
    kube.run("create", "namespace", name)
    yield name
    kube.run("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def spawn(kube: Kube, tmp_path: Path) -> Iterator[Callable[..., OperatorProcess]]:
    started: list[OperatorProcess] = []

    def make(name: str, **env: str) -> OperatorProcess:
        op = OperatorProcess(kube, tmp_path / f"{name}.log", env)
        started.append(op)
        return op

    yield make
    for op in started:
        op.stop()


# --- convergence -----------------------------------------------------------------------------


def _converged(kube: Kube, namespace: str) -> list[str]:
    """What is still wrong: each endpoint has exactly its two Deployments and one Service, all
    owned by it, sized as its status says, status at its generation; nothing is orphaned."""
    problems: list[str] = []
    endpoints = {e["metadata"]["name"]: e for e in kube.list("inferenceendpoints", namespace)}
    for name, endpoint in list(endpoints.items()):
        if endpoint["metadata"].get("deletionTimestamp"):
            problems.append(f"{name} is still being deleted")
            del endpoints[name]
    uids = {e["metadata"]["uid"]: name for name, e in endpoints.items()}
    children = [
        *kube.list("deployments", namespace, selector="app.kubernetes.io/managed-by=tidal"),
        *kube.list("services", namespace, selector="app.kubernetes.io/managed-by=tidal"),
    ]
    owned: dict[str, list[dict[str, Any]]] = {name: [] for name in endpoints}
    for child in children:
        refs = [r for r in child["metadata"].get("ownerReferences") or [] if r.get("controller")]
        label = f"{child['kind']}/{child['metadata']['name']}"
        if child["metadata"].get("deletionTimestamp"):
            problems.append(f"{label} still being deleted")
        elif len(refs) != 1 or refs[0]["uid"] not in uids:
            problems.append(f"{label} is orphaned (owners {refs})")
        else:
            owned[uids[refs[0]["uid"]]].append(child)
    for name, endpoint in endpoints.items():
        status = endpoint.get("status") or {}
        generation = endpoint["metadata"]["generation"]
        ready = condition(endpoint, "Ready")
        if status.get("observedGeneration") != generation or ready is None:
            problems.append(f"{name}: status not at generation {generation}")
            continue
        kinds = {f"{c['kind']}/{c['metadata']['name']}" for c in owned[name]}
        # A capacity type's Deployment exists once it has run a replica (and then stays).
        shares = status.get("replicas") or {}
        needed = {f"Service/{name}"} | {
            f"Deployment/{name}-{kind}" for kind in ("spot", "reserved") if shares.get(kind)
        }
        allowed = needed | {f"Deployment/{name}-spot", f"Deployment/{name}-reserved"}
        if not needed <= kinds <= allowed:
            problems.append(f"{name}: children {sorted(kinds)}, expected {sorted(needed)}")
            continue
        replicas = sum(c["spec"]["replicas"] for c in owned[name] if c["kind"] == "Deployment")
        desired = (status.get("replicas") or {}).get("desired")
        if replicas != desired:
            problems.append(f"{name}: Deployments ask for {replicas}, status desired {desired}")
    return problems


def _wait_converged(kube: Kube, namespace: str, timeout: float, *ops: OperatorProcess) -> float:
    began = time.monotonic()
    last: list[str] = []

    def check() -> bool:
        nonlocal last
        last = _converged(kube, namespace)
        return not last

    try:
        wait_for("convergence", check, timeout=timeout, interval=1)
    except BaseException:
        print("still wrong:", last)
        print(dump(kube, namespace, *ops))
        raise
    return time.monotonic() - began


# --- kill -9 under churn ---------------------------------------------------------------------


def test_kill_9_mid_reconcile_twenty_times_under_churn_converges(
    kube: Kube, ns: str, spawn: Callable[..., OperatorProcess]
) -> None:
    # JSON logs name the object of each line; at debug level Kopf logs each handler's start
    # ("is invoked") and end, so the test can kill inside a reconcile and prove it did.
    op = spawn(
        "churn",
        TIDAL_RECONCILE_INTERVAL_SECONDS="5",
        TIDAL_LOG_FORMAT="json",
        TIDAL_LOG_LEVEL="debug",
    )
    rng = random.Random(8)  # reproducible churn
    # Kopf keeps a finalizer on every endpoint (its timers need one), so a deleted endpoint
    # stays Terminating while the operator is down; re-using its name then would patch the
    # dying object. Each create therefore takes a fresh name, as a GitOps rename would.
    created = 0
    present: set[str] = set()
    operations = {"create": 0, "update": 0, "delete": 0}
    mid_reconcile = 0
    for _ in range(KILLS):
        since = op.size()
        op.start()
        for _ in range(3):
            roll = rng.random()
            if len(present) < 2 or (roll < 0.3 and len(present) < 6):
                name = f"churn-{created}"
                created += 1
                kube.apply(_endpoint(name, rng.randint(0, 2), rng.choice(POLICIES)), ns)
                present.add(name)
                operations["create"] += 1
            elif roll < 0.5:
                name = rng.choice(sorted(present))
                kube.run("delete", "inferenceendpoint", name, "-n", ns, "--wait=false")
                present.discard(name)
                operations["delete"] += 1
            else:
                name = rng.choice(sorted(present))
                kube.apply(_endpoint(name, rng.randint(0, 3), rng.choice(POLICIES)), ns)
                operations["update"] += 1
        # Kill as soon as a handler starts on an endpoint: a churned one, or one being resumed
        # (a round of only deletes runs no handler on what it churned).
        live = set(present)
        wait_for(
            "a handler to start on an endpoint",
            lambda start=since, names=live: _invoked(op.text()[start:], ns, names),
            timeout=60,
            interval=0.02,
        )
        op.kill()
        window = op.text()[since:]
        lines = _lines_about(window, ns, live)
        finished = {name for name, message in lines if HANDLED.search(message)}
        if _invoked(window, ns, live) - finished:
            mid_reconcile += 1  # a handler had begun on an endpoint and not finished
    final_start = time.monotonic()
    op.start()
    seconds = _wait_converged(kube, ns, 180, op)
    endpoints = {e["metadata"]["name"] for e in kube.list("inferenceendpoints", ns)}
    assert endpoints == present
    assert op.alive()
    assert op.tracebacks() == [], op.tracebacks()[0]
    assert mid_reconcile >= KILLS // 2, f"only {mid_reconcile} kills landed mid-reconcile"
    RESULTS["kill9"] = {
        "kills": KILLS,
        "killed_mid_reconcile": mid_reconcile,
        "operations": operations,
        "endpoints_left": len(present),
        "converged_seconds_after_last_restart": round(seconds, 1),
        "restart_to_converged_seconds": round(time.monotonic() - final_start, 1),
    }


def _invoked(text: str, namespace: str, names: set[str]) -> set[str]:
    """Which of `names` a handler was started on (Kopf's debug line "Handler '…' is invoked")."""
    return {
        name for name, message in _lines_about(text, namespace, names) if INVOKED.search(message)
    }


def _lines_about(text: str, namespace: str, names: set[str]) -> list[tuple[str, str]]:
    """(object name, message) of the JSON log lines about any of `names`."""
    found = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        ref = record.get("k8s") if isinstance(record, dict) else None
        if isinstance(ref, dict) and ref.get("namespace") == namespace and ref.get("name") in names:
            found.append((str(ref["name"]), str(record.get("message"))))
    return found


# --- control plane restarts ------------------------------------------------------------------


def test_operator_recovers_from_etcd_and_api_server_restarts_on_its_own(
    kube: Kube, ns: str, spawn: Callable[..., OperatorProcess]
) -> None:
    if kube.workdir is None:
        pytest.skip("restarting etcd/kube-apiserver needs the embedded local control plane")
    from tidal.devcluster import chaos, cluster

    state = cluster.load_state(kube.workdir)
    assert state is not None
    assert state.pids
    op = spawn("restarts", TIDAL_RECONCILE_INTERVAL_SECONDS="5")
    op.start()
    kube.apply(_endpoint("steady", 1), ns)
    _wait_converged(kube, ns, 120, op)
    timings: dict[str, Any] = {}
    for component, replicas in (("etcd", 2), ("kube-apiserver", 1)):
        down = chaos.restart(state, component, down_seconds=3)
        changed = time.monotonic()
        _retrying(functools.partial(kube.apply, _endpoint("steady", replicas), ns))

        def reconciled(r: int = replicas) -> bool:
            obj = kube.get("inferenceendpoint", "steady", ns) or {}
            status = obj.get("status") or {}
            return (
                status.get("observedGeneration") == obj["metadata"]["generation"]
                and (status.get("replicas") or {}).get("desired") == r
            )

        try:
            wait_for(f"the change after the {component} restart", reconciled, timeout=120)
        except BaseException:
            print(dump(kube, ns, op))
            raise
        timings[component] = {
            "down_to_ready_seconds": round(down, 1),
            "change_reconciled_seconds": round(time.monotonic() - changed, 1),
        }
        assert op.alive(), "the operator died"
        assert op.starts == 1, "the operator had to be restarted"
    _wait_converged(kube, ns, 120, op)
    assert op.tracebacks() == [], op.tracebacks()[0]
    RESULTS["restarts"] = timings


def _retrying(action: Callable[[], object], timeout: float = 60) -> None:
    """Run a kubectl action, retrying while the API server is still coming back."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            action()
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


# --- concurrent writers (409s) ---------------------------------------------------------------


def test_concurrent_writers_on_the_same_objects_converge(
    kube: Kube, ns: str, spawn: Callable[..., OperatorProcess]
) -> None:
    op = spawn("conflicts", TIDAL_RECONCILE_INTERVAL_SECONDS="3")
    op.start()
    kube.apply(_endpoint("contended", 1, "ReservedOnly"), ns)
    _wait_converged(kube, ns, 120, op)
    api_client = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(kube.kubeconfig)
    )
    custom, apps = k8s.CustomObjectsApi(api_client), k8s.AppsV1Api(api_client)
    conflicts = {"test": 0}
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer_loop() -> None:
        try:
            label_with_optimistic_locking()
        except BaseException as exc:
            errors.append(exc)

    def label_with_optimistic_locking() -> None:
        # Read-modify-write with resourceVersion, as a controller-runtime client would: the
        # operator's status and annotation writes race it and the API server answers 409.
        i = 0
        while not stop.is_set():
            i += 1
            obj = cast(
                dict[str, Any],
                custom.get_namespaced_custom_object(
                    "tidal.dev", "v1alpha1", ns, "inferenceendpoints", "contended"
                ),
            )
            obj["metadata"].setdefault("labels", {})["writer"] = f"test-{i}"
            obj["spec"]["scaling"]["maxReplicas"] = 2 + i % 2
            try:
                custom.replace_namespaced_custom_object(
                    "tidal.dev", "v1alpha1", ns, "inferenceendpoints", "contended", obj
                )
            except ApiException as exc:
                if exc.status != 409:
                    raise
                conflicts["test"] += 1
            time.sleep(0.05)

    writer = threading.Thread(target=writer_loop, daemon=True)
    writer.start()
    try:
        for i in range(15):
            # Fight the operator over a field it owns and add one it does not.
            apps.patch_namespaced_deployment(
                "contended-reserved",
                ns,
                {"spec": {"replicas": 5}, "metadata": {"annotations": {"test/touched": str(i)}}},
            )
            time.sleep(0.3)
    finally:
        stop.set()
        writer.join(timeout=30)
        api_client.close()
    assert errors == []
    seconds = _wait_converged(kube, ns, 120, op)
    deployment = kube.get("deployment", "contended-reserved", ns) or {}
    assert deployment["spec"]["replicas"] == 1, "the operator did not take back its field"
    assert deployment["metadata"]["annotations"]["test/touched"] == "14", "it took the test's"
    endpoint = kube.get("inferenceendpoint", "contended", ns) or {}
    assert endpoint["metadata"]["labels"]["writer"].startswith("test-")
    assert op.alive()
    assert op.tracebacks() == [], op.tracebacks()[0]
    assert "failed permanently" not in op.text()
    RESULTS["conflicts"] = {
        "test_writer_409s": conflicts["test"],
        "operator_409s_logged": op.text().count("HTTP 409"),
        "converged_seconds": round(seconds, 1),
    }


# --- peering -----------------------------------------------------------------------------------


def test_two_peered_replicas_exactly_one_acts_and_the_other_takes_over(
    kube: Kube, ns: str, spawn: Callable[..., OperatorProcess]
) -> None:
    kube.run("apply", "--server-side", "-k", str(REPO / "manifests" / "peering"))
    kube.run(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/clusterkopfpeerings.kopf.dev"
    )
    peering = f"tidal-{uuid.uuid4().hex[:6]}"
    peering_object = yaml.safe_load((REPO / "manifests" / "peering" / "peering.yaml").read_text())
    peering_object["metadata"]["name"] = peering
    kube.apply(peering_object)
    try:
        # JSON log lines carry the object they concern (under "k8s"): who acted on what.
        common = {"TIDAL_PEERING": peering, "TIDAL_LOG_FORMAT": "json"}
        leader = spawn("leader", TIDAL_PEERING_PRIORITY="200", **common)
        follower = spawn("follower", TIDAL_PEERING_PRIORITY="100", **common)
        leader.start()
        leader.wait_for_log("Resuming operations", timeout=60)
        follower.start()
        wait_for(
            "both replicas in the peering object",
            lambda: len((kube.get("clusterkopfpeering", peering) or {}).get("status") or {}) == 2,
            timeout=60,
        )
        kube.apply(_endpoint("peered", 1), ns)
        _wait_converged(kube, ns, 120, leader, follower)
        time.sleep(5)  # a timer tick: a follower that acted would have logged by now
        assert _acted_on(leader, ns, "peered")
        assert not _acted_on(follower, ns, "peered"), "the follower acted beside the leader"

        handover = time.monotonic()
        leader.stop()  # graceful: Kopf marks its peer entry dead, the follower resumes
        follower.wait_for_log("Resuming operations", timeout=60)
        kube.apply(_endpoint("peered", 2), ns)
        _wait_converged(kube, ns, 120, follower)
        endpoint = kube.get("inferenceendpoint", "peered", ns) or {}
        assert endpoint["status"]["replicas"]["desired"] == 2
        assert _acted_on(follower, ns, "peered")
        assert follower.tracebacks() == []
        assert leader.tracebacks() == []
        RESULTS["peering"] = {
            "handover_to_reconciled_seconds": round(time.monotonic() - handover, 1)
        }
    finally:
        kube.run("delete", "clusterkopfpeering", peering, "--ignore-not-found", check=False)


def _acted_on(op: OperatorProcess, namespace: str, name: str) -> list[str]:
    """The operator's log lines about one object (JSON format)."""
    return [message for _, message in _lines_about(op.text(), namespace, {name})]
