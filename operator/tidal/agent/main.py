"""`tidal agent`: sample GPUs, average, publish the telemetry annotation, serve metrics.

Owns: the per-node state (`NodeAgent`: window, last published document, counters), the loop
(`Agent.tick`, every `interval_seconds`) and the process entry point `run`. Must not: compute
telemetry itself (`averaging`, `attribution`), decide when to write (`publishing`), or import
kubernetes / pynvml (`clients/`). The settings are `config.Config`; `tidal agent --once` is
`snapshot`, which needs none of what this module imports.

Two modes, one loop:
- real (DaemonSet): one node, `--node-name` (the Downward API's spec.nodeName), an `NvmlBackend`;
  the pods on the node are re-listed every `refresh_seconds` (30) and sooner when a GPU process
  belongs to a pod the agent does not know yet;
- simulated (`--simulate`): a `SimulatedBackend` per GPU node, for one node or, with
  `--all-nodes`, every node labelled nvidia.com/gpu.present=true (the local KWOK fleet: one
  process for all). Nodes, their override annotations and the bound pods are re-listed every
  `refresh_seconds` (3).

Blocking work (NVML, the API server) runs in threads (`asyncio.to_thread`); the event loop only
schedules and serves HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tidal.agent.averaging import Summary, Window
from tidal.agent.cluster import Cluster, KubeCluster, pod_ref
from tidal.agent.config import Config, configure_logging
from tidal.agent.exposition import NodeStats, NodeView, render
from tidal.agent.publishing import Decision, decide
from tidal.agent.server import start
from tidal.agent.simulation import (
    Scenario,
    SimulatedBackend,
    backend_for_node,
    load_scenario,
    parse_override,
)
from tidal.api.labels import GPU_TELEMETRY
from tidal.api.telemetry import GpuTelemetry
from tidal.clients.nvml import GpuBackend, NvmlBackend, PodRef
from tidal.errors import TidalError

__all__ = ["Agent", "NodeAgent", "run", "serve"]

log = logging.getLogger("tidal.agent")

# A pod the agent does not know yet owns a GPU process: re-list pods, but not more often.
_EAGER_REFRESH_SECONDS = 5.0
# Failed annotation writes are retried after 2, 4, 8, ... seconds, at most this far apart.
_MAX_BACKOFF_SECONDS = 60.0


class NodeAgent:
    """One node: its backend, window, last published document and counters."""

    def __init__(self, node: str, backend: GpuBackend, config: Config) -> None:
        self.node = node
        self.backend = backend
        self.window = Window(config.window_seconds)
        self.thresholds = config.thresholds
        self.stats = NodeStats()
        self.summary: Summary | None = None
        self.published: GpuTelemetry | None = None
        self.published_at: float | None = None
        # Consecutive failed writes, and when the next attempt is due: a node the agent may not
        # write (RBAC, the admission policy) must not be retried every few seconds by every node.
        self.publish_failures = 0
        self.retry_at: float | None = None

    def sample(self, now: float, pods: Sequence[PodRef]) -> Summary:
        """Read the backend once and return the window's document (blocking: NVML)."""
        reading = self.backend.read(now, pods)
        self.stats.samples += 1
        self.window.add(now, reading)
        summary = self.window.summary(now, {p.uid: p for p in pods})
        if summary is None:  # unreachable: a reading was just added
            raise AssertionError("empty window after a reading")
        self.summary = summary
        return summary

    def decide(self, now: float) -> Decision:
        if self.summary is None:
            return Decision(False)
        decision = decide(
            self.published, self.published_at, self.summary.document, now, self.thresholds
        )
        if not decision.publish and decision.reason is not None:
            self.stats.publishes_skipped += 1
        return decision

    def view(self) -> NodeView:
        return NodeView(self.node, self.summary, self.stats)


@dataclass
class _Health:
    started: float
    interval: float
    last_tick: float | None = None


class Agent:
    """The loop's state across nodes; also the `server.Probe` the HTTP endpoints ask."""

    def __init__(
        self,
        config: Config,
        cluster: Cluster,
        *,
        backend: GpuBackend | None = None,
        scenario: Scenario | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.cluster = cluster
        self.monotonic = monotonic
        self.health = _Health(started=monotonic(), interval=config.interval_seconds)
        self.agents: dict[str, NodeAgent] = {}
        self.pods: dict[str, list[PodRef]] = {}
        self.scenario = scenario
        if config.simulate:
            self.scenario = scenario or load_scenario(config.scenario)
        else:
            assert config.node_name is not None  # checked by Config
            self.agents[config.node_name] = NodeAgent(
                config.node_name, backend or NvmlBackend(config.proc_root), config
            )
        self._last_refresh: float | None = None
        self._refresh_soon = False
        self._refresh_failing = False

    # --- server.Probe -------------------------------------------------------------------

    def metrics(self) -> str:
        return render([a.view() for a in sorted(self.agents.values(), key=lambda a: a.node)])

    def alive(self) -> bool:
        now = self.monotonic()
        allowance = max(30.0, 5 * self.health.interval)
        if self.health.last_tick is None:
            return now - self.health.started < 2 * allowance
        return now - self.health.last_tick < allowance

    def ready(self) -> bool:
        return self.health.last_tick is not None

    # --- the loop -----------------------------------------------------------------------

    async def tick(self, now: float) -> None:
        """One round: refresh what the API server says when due, sample, publish if needed."""
        due = self._last_refresh is None or now - self._last_refresh >= self.config.refresh
        eager = self._refresh_soon and (
            self._last_refresh is None or now - self._last_refresh >= _EAGER_REFRESH_SECONDS
        )
        if due or eager:
            await self.refresh(now)
        for agent in list(self.agents.values()):
            summary = await asyncio.to_thread(agent.sample, now, self.pods.get(agent.node, []))
            if summary.unattributed_processes and not self.config.simulate:
                self._refresh_soon = True
            decision = agent.decide(now)
            backing_off = agent.retry_at is not None and now < agent.retry_at
            if decision.publish and decision.reason is not None and not backing_off:
                await self._publish(agent, summary.document, decision.reason, now)
        self.health.last_tick = self.monotonic()

    async def refresh(self, now: float) -> None:
        self._last_refresh = now
        self._refresh_soon = False
        try:
            if self.config.simulate:
                await self._refresh_simulated()
            else:
                node = next(iter(self.agents))
                objects = await asyncio.to_thread(self.cluster.pods_on, node)
                self.pods = {node: [p for p in map(pod_ref, objects) if p is not None]}
        except TidalError as exc:
            if not self._refresh_failing:
                log.warning("Cannot list nodes or pods (keeping the last known): %s", exc)
            self._refresh_failing = True
            return
        if self._refresh_failing:
            log.info("Listing nodes and pods works again")
        self._refresh_failing = False

    async def _refresh_simulated(self) -> None:
        assert self.scenario is not None
        nodes = await asyncio.to_thread(self.cluster.gpu_nodes)
        if not self.config.all_nodes:
            nodes = [n for n in nodes if n["metadata"]["name"] == self.config.node_name]
        pods = await asyncio.to_thread(self.cluster.bound_pods)
        seen = set()
        for node in nodes:
            name = node["metadata"]["name"]
            seen.add(name)
            override = parse_override(node["metadata"].get("annotations"))
            agent = self.agents.get(name)
            if agent is None:
                backend = backend_for_node(node, self.scenario)
                self.agents[name] = NodeAgent(name, backend, self.config)
                log.info(
                    "Simulating GPUs node=%s gpus=%d override=%s", name, backend.gpu_count, override
                )
            elif isinstance(agent.backend, SimulatedBackend) and agent.backend.override != override:
                agent.backend.set_override(override)
                log.info("Simulated GPU utilization override node=%s value=%s", name, override)
        for name in set(self.agents) - seen:
            self.agents.pop(name).backend.close()
            log.info("Stopped simulating node=%s (gone or no longer a GPU node)", name)
        grouped: dict[str, list[PodRef]] = {}
        for ref in map(pod_ref, pods):
            if ref is not None and ref.node_name in self.agents:
                grouped.setdefault(ref.node_name, []).append(ref)
        self.pods = grouped

    async def _publish(self, agent: NodeAgent, doc: GpuTelemetry, reason: str, now: float) -> None:
        try:
            await asyncio.to_thread(
                self.cluster.annotate, agent.node, GPU_TELEMETRY, doc.to_annotation()
            )
        except TidalError as exc:
            agent.stats.publish_errors += 1
            if not agent.publish_failures:
                log.warning("Cannot write %s node=%s: %s", GPU_TELEMETRY, agent.node, exc)
            agent.publish_failures += 1
            agent.retry_at = now + min(_MAX_BACKOFF_SECONDS, 2.0**agent.publish_failures)
            return
        recovered = agent.publish_failures > 0
        agent.publish_failures, agent.retry_at = 0, None
        first = agent.published is None
        agent.published, agent.published_at = doc, now
        agent.stats.publishes[reason] = agent.stats.publishes.get(reason, 0) + 1
        agent.stats.last_publish_time = now
        level = logging.INFO if first or recovered or reason == "availability" else logging.DEBUG
        log.log(
            level,
            "Published GPU telemetry node=%s reason=%s source=%s gpus=%d pods=%d utilization=%s",
            agent.node,
            reason,
            doc.source,
            len(doc.gpus),
            len(doc.pods),
            "unknown" if doc.utilization_percent is None else f"{doc.utilization_percent:.1f}",
        )

    def close(self) -> None:
        for agent in self.agents.values():
            agent.backend.close()


async def serve(
    agent: Agent, stop: asyncio.Event, *, clock: Callable[[], float] = time.time
) -> None:
    """Run the HTTP endpoints and the loop until `stop` is set."""
    config = agent.config
    runner, port = await start(agent, config.metrics_host, config.metrics_port)
    log.info("Serving /metrics /healthz /readyz on %s:%d", config.metrics_host, port)
    try:
        while not stop.is_set():
            began = agent.monotonic()
            try:
                await agent.tick(clock())
            except Exception:
                # A bug, not a dependency failure (those are handled inside tick): log it and
                # carry on; if it repeats, /healthz goes stale and the kubelet restarts us.
                log.exception("Sampling round failed")
            pause = max(0.0, config.interval_seconds - (agent.monotonic() - began))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=pause)
    finally:
        await runner.cleanup()
        agent.close()


def run(config: Config) -> int:
    """The process: connect, serve, loop until SIGTERM/SIGINT. Returns the exit code."""
    configure_logging()
    try:
        cluster = KubeCluster()
    except TidalError as exc:
        log.error("Cannot connect to the API server: %s", exc)
        return 1
    agent = Agent(config, cluster)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        mode = "simulated, all GPU nodes" if config.all_nodes else f"node={config.node_name}"
        log.info(
            "Tidal GPU agent starting (%s%s) interval=%ss window=%ss",
            mode,
            ", simulated" if config.simulate and not config.all_nodes else "",
            config.interval_seconds,
            config.window_seconds,
        )
        await serve(agent, stop)
        log.info("Tidal GPU agent stopped")

    asyncio.run(main())
    return 0
