"""The agent loop with an in-memory cluster and scripted backends: what gets written, when, and
what the HTTP endpoints answer. No API server, no GPU, no monkeypatching: the loop takes its
`Cluster` and backend as arguments."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from collections.abc import Sequence
from typing import Any

import aiohttp
import pytest
from aiohttp import test_utils

from tidal.agent.config import Config
from tidal.agent.main import Agent, serve
from tidal.agent.publishing import Thresholds
from tidal.agent.server import make_app
from tidal.agent.simulation import Scenario
from tidal.api.labels import GPU_TELEMETRY, SIMULATED_GPU_UTILIZATION
from tidal.api.telemetry import GpuTelemetry
from tidal.cli import main as cli
from tidal.clients.nvml import GpuReading, PodRef, ProcessReading, Reading
from tidal.devcluster import fleet
from tidal.errors import TemporaryError

Object = dict[str, Any]
NODE = "gpu-node-1"
UID = "6f1c2a7b-9e0d-4c5a-8b6f-1e2d7c9a0b3e"


class FakeCluster:
    """`Cluster` in memory: nodes and pods as wire dicts; writes recorded."""

    def __init__(self, nodes: list[Object] | None = None, pods: list[Object] | None = None) -> None:
        self.nodes = nodes or []
        self.pods = pods or []
        self.writes: list[tuple[str, str, str]] = []
        self.fail_writes: Exception | None = None
        self.fail_lists: Exception | None = None
        self.list_calls = 0

    def _listing(self) -> None:
        self.list_calls += 1
        if self.fail_lists:
            raise self.fail_lists

    def gpu_nodes(self) -> list[Object]:
        self._listing()
        return copy.deepcopy(self.nodes)

    def pods_on(self, node: str) -> list[Object]:
        self._listing()
        return [p for p in copy.deepcopy(self.pods) if p["spec"].get("nodeName") == node]

    def bound_pods(self) -> list[Object]:
        self._listing()
        return [p for p in copy.deepcopy(self.pods) if p["spec"].get("nodeName")]

    def annotate(self, node: str, key: str, value: str) -> None:
        if self.fail_writes:
            raise self.fail_writes
        self.writes.append((node, key, value))

    def docs(self, node: str) -> list[GpuTelemetry]:
        return [
            GpuTelemetry.model_validate_json(v)
            for n, k, v in self.writes
            if n == node and k == GPU_TELEMETRY
        ]


class ScriptedBackend:
    """Returns `readings` in turn (the last one forever); records the pods it was given."""

    def __init__(self, *readings: Reading) -> None:
        self.readings = list(readings)
        self.pods_seen: list[Sequence[PodRef]] = []
        self.closed = False

    def read(self, now: float, pods: Sequence[PodRef]) -> Reading:
        self.pods_seen.append(pods)
        return self.readings.pop(0) if len(self.readings) > 1 else self.readings[0]

    def close(self) -> None:
        self.closed = True


def _reading(util: float, pid_uid: str | None = None) -> Reading:
    procs = () if pid_uid is None else (ProcessReading(7, 0, 1000, util, pid_uid),)
    gpu = GpuReading(
        index=0,
        uuid="GPU-0",
        name="NVIDIA L4",
        utilization_percent=util,
        memory_used_mib=1000,
        memory_total_mib=23034,
        process_samples=True,
    )
    return Reading(source="nvml", gpus=(gpu,), processes=procs, driver_version="580")


def _pod(
    name: str, node: str | None, gpus: int = 1, uid: str | None = None, **annotations: str
) -> Object:
    container: Object = {
        "name": "c",
        "resources": {"limits": {"nvidia.com/gpu": str(gpus)}} if gpus else {},
    }
    return {
        "metadata": {
            "name": name,
            "namespace": "team",
            "uid": uid or f"uid-{name}",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "annotations": annotations,
        },
        "spec": {"nodeName": node, "containers": [container]},
        "status": {"phase": "Running"},
    }


def _real(cluster: FakeCluster, backend: ScriptedBackend, **config: Any) -> Agent:
    return Agent(
        Config(node_name=NODE, interval_seconds=1, window_seconds=1, **config),
        cluster,
        backend=backend,
    )


def _run(agent: Agent, *times: float) -> None:
    async def ticks() -> None:
        for now in times:
            await agent.tick(now)

    asyncio.run(ticks())


# --- the real (DaemonSet) mode ----------------------------------------------------------------


def test_the_first_sample_is_published_on_the_agents_own_node() -> None:
    cluster = FakeCluster()

    _run(_real(cluster, ScriptedBackend(_reading(40))), 100.0)

    ((node, key, value),) = cluster.writes
    assert (node, key) == (NODE, GPU_TELEMETRY)
    doc = GpuTelemetry.model_validate_json(value)
    assert doc.source == "nvml"
    assert doc.gpus[0].utilization_percent == 40.0
    assert doc.gpus[0].product == "NVIDIA-L4"


def test_unchanged_telemetry_is_only_rewritten_as_a_heartbeat() -> None:
    cluster = FakeCluster()
    agent = _real(cluster, ScriptedBackend(_reading(40)))

    _run(agent, 100.0, 101.0, 130.0, 159.0, 160.0)

    assert [d.time.timestamp() for d in cluster.docs(NODE)] == [100.0, 160.0]
    stats = agent.agents[NODE].stats
    assert stats.publishes == {"first": 1, "heartbeat": 1}
    assert stats.samples == 5


def test_a_meaningful_change_is_published_after_the_minimum_interval() -> None:
    cluster = FakeCluster()
    agent = _real(cluster, ScriptedBackend(_reading(40), _reading(40), _reading(90)))

    _run(agent, 100.0, 101.0, 102.0, 103.0, 106.0)

    utils = [d.gpus[0].utilization_percent for d in cluster.docs(NODE)]
    assert utils == [40.0, 90.0]
    assert agent.agents[NODE].stats.publishes_skipped == 2  # at 102 and 103
    assert agent.agents[NODE].stats.publishes == {"first": 1, "utilization": 1}


def test_pods_on_the_node_give_the_attribution_its_names() -> None:
    cluster = FakeCluster(pods=[_pod("llama-0", NODE, uid=UID), _pod("elsewhere", "other")])
    backend = ScriptedBackend(_reading(60, pid_uid=UID))

    _run(_real(cluster, backend), 100.0)

    (doc,) = cluster.docs(NODE)
    (pod,) = doc.pods
    assert (pod.namespace, pod.name, pod.uid) == ("team", "llama-0", UID)
    assert [p.name for p in backend.pods_seen[0]] == ["llama-0"]


def test_an_unknown_pod_behind_a_gpu_process_makes_the_agent_relist_pods_soon() -> None:
    cluster = FakeCluster()
    agent = _real(cluster, ScriptedBackend(_reading(60, pid_uid=UID)))

    _run(agent, 100.0)
    cluster.pods = [_pod("new-pod", NODE, uid=UID)]
    _run(agent, 102.0)
    assert cluster.list_calls == 1  # not more often than every 5 s
    _run(agent, 105.0, 111.0)

    assert cluster.list_calls == 2
    assert cluster.docs(NODE)[-1].pods[0].name == "new-pod"


def test_finished_pods_are_not_attributed() -> None:
    done = _pod("job", NODE, uid=UID)
    done["status"]["phase"] = "Succeeded"
    cluster = FakeCluster(pods=[done])

    _run(_real(cluster, ScriptedBackend(_reading(60, pid_uid=UID))), 100.0)

    assert cluster.docs(NODE)[0].pods == []


def test_a_failed_write_is_counted_logged_once_and_retried_with_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cluster = FakeCluster()
    cluster.fail_writes = TemporaryError("HTTP 403: forbidden by ValidatingAdmissionPolicy")
    agent = _real(cluster, ScriptedBackend(_reading(40)))

    with caplog.at_level(logging.INFO, logger="tidal.agent"):
        # Attempts at 100 (retry after 2 s), 102 (after 4 s) and 106 (after 8 s); none between.
        _run(agent, 100.0, 101.0, 102.0, 103.0, 105.0, 106.0, 110.0)
        cluster.fail_writes = None
        _run(agent, 113.0, 114.0)

    assert agent.agents[NODE].stats.publish_errors == 3
    assert [d.time.timestamp() for d in cluster.docs(NODE)] == [114.0]
    assert agent.agents[NODE].stats.publishes == {"first": 1}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "forbidden" in warnings[0]


def test_backoff_between_failed_writes_is_capped_at_a_minute() -> None:
    cluster = FakeCluster()
    cluster.fail_writes = TemporaryError("HTTP 503")
    agent = _real(cluster, ScriptedBackend(_reading(40)))

    _run(agent, *[100.0 + t for t in range(0, 600, 1)])

    # 2+4+8+16+32 = 62 s of growing pauses, then one attempt a minute.
    assert agent.agents[NODE].stats.publish_errors == 6 + (699 - 162) // 60
    assert agent.agents[NODE].retry_at is not None


def test_a_failing_pod_list_keeps_the_last_known_pods(caplog: pytest.LogCaptureFixture) -> None:
    cluster = FakeCluster(pods=[_pod("llama-0", NODE, uid=UID)])
    agent = _real(cluster, ScriptedBackend(_reading(60, pid_uid=UID)), refresh_seconds=1)

    _run(agent, 100.0)
    cluster.fail_lists = TemporaryError("API server unreachable")
    with caplog.at_level(logging.WARNING, logger="tidal.agent"):
        _run(agent, 102.0, 104.0, 200.0)

    assert cluster.docs(NODE)[-1].pods[0].name == "llama-0"
    assert len([r for r in caplog.records if "Cannot list" in r.getMessage()]) == 1


def test_unavailable_nvml_is_published_and_the_agent_stays_up() -> None:
    cluster = FakeCluster()
    backend = ScriptedBackend(Reading(source="unavailable", error="NVML unavailable: no driver"))
    agent = _real(cluster, backend)

    _run(agent, 100.0, 101.0, 170.0)

    docs = cluster.docs(NODE)
    assert [d.source for d in docs] == ["unavailable", "unavailable"]
    assert docs[0].error == "NVML unavailable: no driver"
    assert agent.ready()


# --- the simulated fleet ----------------------------------------------------------------------

FLEET = fleet.render_nodes(fleet.load(fleet.DEFAULT_FLEET))
GPU_NODES = [n for n in FLEET if n["metadata"]["labels"].get("nvidia.com/gpu.present") == "true"]
STEADY = Scenario.model_validate(
    {
        "defaults": {
            "node": {"kind": "steady", "percent": 10},
            "pod": {"kind": "steady", "percent": 50},
        }
    }
)


def _simulated(cluster: FakeCluster, **config: Any) -> Agent:
    settings: dict[str, Any] = {
        "simulate": True,
        "all_nodes": True,
        "window_seconds": 2,
        "interval_seconds": 1,
    }
    settings.update(config)
    return Agent(Config(**settings), cluster, scenario=STEADY)


def test_one_simulated_agent_annotates_every_gpu_node() -> None:
    cluster = FakeCluster(nodes=copy.deepcopy(GPU_NODES))

    _run(_simulated(cluster), 100.0)

    annotated = {node for node, _, _ in cluster.writes}
    assert annotated == {n["metadata"]["name"] for n in GPU_NODES}
    assert len(annotated) == 10
    for node in annotated:
        (doc,) = cluster.docs(node)
        assert doc.source == "simulated"
        assert doc.utilization_percent == 10.0


def test_a_node_override_shows_in_its_annotation_after_the_window() -> None:
    nodes = copy.deepcopy(GPU_NODES)
    cluster = FakeCluster(nodes=nodes)
    agent = _simulated(cluster)
    hot = nodes[0]["metadata"]["name"]
    _run(agent, 100.0)

    nodes[0]["metadata"]["annotations"][SIMULATED_GPU_UTILIZATION] = "95"
    _run(agent, 103.0, 104.0, 105.0, 108.0)

    assert cluster.docs(hot)[-1].utilization_percent == 95.0
    others = {n for n, _, _ in cluster.writes if n != hot}
    assert all(cluster.docs(n)[-1].utilization_percent == 10.0 for n in others)


def test_gpu_pods_on_simulated_nodes_are_attributed_with_the_scenario_curve() -> None:
    node = GPU_NODES[0]["metadata"]["name"]
    cluster = FakeCluster(
        nodes=copy.deepcopy(GPU_NODES),
        pods=[_pod("llama-0", node, gpus=2), _pod("cpu-job", node, gpus=0), _pod("pending", None)],
    )

    _run(_simulated(cluster), 100.0)

    (doc,) = cluster.docs(node)
    (pod,) = doc.pods
    assert (pod.namespace, pod.name, pod.gpu_indexes) == ("team", "llama-0", [0, 1])
    assert pod.utilization_percent == 50.0
    assert pod.utilization_source == "process-samples"


def test_nodes_that_appear_or_vanish_are_picked_up_at_the_next_refresh() -> None:
    cluster = FakeCluster(nodes=copy.deepcopy(GPU_NODES[:1]))
    agent = _simulated(cluster, refresh_seconds=5)
    _run(agent, 100.0)
    assert set(agent.agents) == {GPU_NODES[0]["metadata"]["name"]}

    cluster.nodes = copy.deepcopy(GPU_NODES[1:3])
    _run(agent, 101.0)
    assert set(agent.agents) == {GPU_NODES[0]["metadata"]["name"]}  # not refreshed yet
    _run(agent, 105.0)

    assert set(agent.agents) == {n["metadata"]["name"] for n in GPU_NODES[1:3]}


def test_simulating_one_named_node() -> None:
    name = GPU_NODES[3]["metadata"]["name"]
    cluster = FakeCluster(nodes=copy.deepcopy(GPU_NODES))

    _run(_simulated(cluster, all_nodes=False, node_name=name), 100.0)

    assert {n for n, _, _ in cluster.writes} == {name}


# --- probes, metrics, HTTP --------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_ready_after_the_first_round_alive_while_rounds_keep_coming() -> None:
    clock = Clock()
    agent = Agent(
        Config(node_name=NODE, interval_seconds=2, window_seconds=10),
        FakeCluster(),
        backend=ScriptedBackend(_reading(1)),
        monotonic=clock,
    )
    assert not agent.ready()
    assert agent.alive()  # starting up

    _run(agent, 100.0)
    clock.now = 29.0
    assert agent.ready()
    assert agent.alive()

    clock.now = 31.0  # no round for longer than max(30 s, 5 intervals)
    assert not agent.alive()


def test_metrics_expose_the_nodes_gpus_in_dcgm_form() -> None:
    cluster = FakeCluster()
    agent = _real(cluster, ScriptedBackend(_reading(40)))
    _run(agent, 100.0)

    text = agent.metrics()

    assert (
        f'DCGM_FI_DEV_GPU_UTIL{{gpu="0",UUID="GPU-0",modelName="NVIDIA L4",Hostname="{NODE}"}} 40'
        in text
    )
    assert f'tidal_agent_publishes_total{{Hostname="{NODE}",reason="first"}} 1' in text


class StaticProbe:
    def __init__(self, alive: bool, ready: bool) -> None:
        self._alive, self._ready = alive, ready

    def metrics(self) -> str:
        return "m 1\n"

    def alive(self) -> bool:
        return self._alive

    def ready(self) -> bool:
        return self._ready


@pytest.mark.parametrize(("alive", "ready"), [(True, True), (True, False), (False, False)])
def test_http_endpoints_answer_from_the_probe(alive: bool, ready: bool) -> None:
    async def check() -> dict[str, tuple[int, str]]:
        async with test_utils.TestClient(
            test_utils.TestServer(make_app(StaticProbe(alive, ready)))
        ) as client:
            answers = {}
            for path in ("/metrics", "/healthz", "/readyz"):
                response = await client.get(path)
                answers[path] = (response.status, response.headers["Content-Type"])
            return answers

    answers = asyncio.run(check())

    assert answers["/metrics"] == (200, "text/plain; version=0.0.4; charset=utf-8")
    assert answers["/healthz"][0] == (200 if alive else 503)
    assert answers["/readyz"][0] == (200 if ready else 503)


def test_serve_runs_rounds_until_stopped_and_releases_everything() -> None:
    cluster = FakeCluster()
    backend = ScriptedBackend(_reading(40))
    agent = Agent(
        Config(
            node_name=NODE,
            interval_seconds=0.05,
            window_seconds=1,
            metrics_host="127.0.0.1",
            metrics_port=0,
        ),
        cluster,
        backend=backend,
    )

    async def scenario() -> str:
        stop = asyncio.Event()
        task = asyncio.create_task(serve(agent, stop))
        while not agent.ready():
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        stop.set()
        await asyncio.wait_for(task, timeout=5)
        return "done"

    assert asyncio.run(scenario()) == "done"
    assert agent.agents[NODE].stats.samples >= 3
    assert backend.closed
    assert cluster.docs(NODE)


def test_serve_answers_http_while_running() -> None:
    agent = Agent(
        Config(
            node_name=NODE,
            interval_seconds=0.05,
            window_seconds=1,
            metrics_host="127.0.0.1",
            metrics_port=0,
        ),
        FakeCluster(),
        backend=ScriptedBackend(_reading(40)),
    )

    async def scenario() -> tuple[int, str]:
        from tidal.agent import server

        runner, port = await server.start(agent, "127.0.0.1", 0)
        try:
            await agent.tick(100.0)
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{port}/metrics") as response,
            ):
                return response.status, await response.text()
        finally:
            await runner.cleanup()

    status, text = asyncio.run(scenario())

    assert status == 200
    assert "DCGM_FI_DEV_GPU_UTIL" in text


# --- configuration and the command line -------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"all_nodes": True}, "--all-nodes needs --simulate"),
        ({}, "node name is required"),
        ({"node_name": "n", "interval_seconds": 0}, "interval"),
        ({"node_name": "n", "interval_seconds": 5, "window_seconds": 2}, "interval"),
    ],
)
def test_invalid_configurations_are_refused(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Config(**config)


def test_refresh_defaults_differ_for_real_and_simulated_agents() -> None:
    assert Config(node_name="n").refresh == 30.0
    assert Config(simulate=True, all_nodes=True).refresh == 3.0
    assert Config(node_name="n", refresh_seconds=7).refresh == 7.0


def test_cli_refuses_all_nodes_without_simulate(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["agent", "--all-nodes"]) == 2
    assert "--all-nodes needs --simulate" in capsys.readouterr().err


def test_cli_refuses_a_heartbeat_readers_would_see_as_stale(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli(["agent", "--node-name", "n", "--heartbeat", "300"]) == 2
    assert "heartbeat" in capsys.readouterr().err


def test_cli_once_prints_one_simulated_document(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["agent", "--once", "--simulate", "--node-name", "h100-spot-x"]) == 0

    doc = GpuTelemetry.model_validate_json(capsys.readouterr().out)
    assert doc.source == "simulated"
    assert len(doc.gpus) == 8
    assert json.loads(doc.to_annotation())["schemaVersion"] == 1


def test_thresholds_reach_the_agent() -> None:
    config = Config(node_name="n", thresholds=Thresholds(heartbeat_seconds=30))

    assert config.thresholds.heartbeat_seconds == 30
