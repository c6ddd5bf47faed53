"""The `tidal` command: `run` (the operator), `agent` (the GPU telemetry node agent),
`gateway` (the OpenAI-compatible gateway), `crds` (generate CRDs), `dev up|down|status|...`.

Owns: argument parsing and exit codes. Must not: hold logic of its own; every subcommand
delegates to the module that owns the work, imported lazily so `tidal crds` does not pay for
Kopf and `tidal run` does not pay for the dev cluster.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tidal", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator (cluster-wide unless --namespace)")
    run.add_argument("--namespace", "-n", help="watch only this namespace")
    run.add_argument(
        "--liveness",
        metavar="URL",
        help="serve Kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz",
    )

    _agent_parser(sub)
    _gateway_parser(sub)

    crds = sub.add_parser("crds", help="print the CRDs generated from the API models")
    crds.add_argument("--out", metavar="DIR", help="write one file per CRD into DIR")
    crds.add_argument("--check", action="store_true", help="exit 1 if DIR differs (drift)")

    dev = sub.add_parser("dev", help="the embedded local control plane (etcd + kube-* + KWOK)")
    _dev_parser(dev.add_subparsers(dest="dev_command", required=True))
    return parser


def _dev_parser(dev_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = dev_sub.add_parser("up", help="build (first time), start and populate a local cluster")
    up.add_argument(
        "--fleet",
        metavar="static|elastic|FILE",
        help="static (default: the built-in 2-region fleet), elastic (CPU nodes; Karpenter "
        "launches GPU nodes for Pending pods) or a fleet file",
    )
    up.add_argument(
        "--startup-seconds",
        type=_seconds,
        help="how long simulated replicas stay Running but not Ready (default: "
        "$TIDAL_SIM_STARTUP_SECONDS, else 0 static, 30 elastic)",
    )
    for name, text in (
        ("down", "stop everything `tidal dev up` started"),
        ("status", "say what runs where"),
        ("build", "only build and cache the control-plane binaries"),
        ("kubeconfig", "print the path of the local cluster's kubeconfig"),
    ):
        dev_sub.add_parser(name, help=text)
    dev_sub.choices["build"].add_argument(
        "--karpenter", action="store_true", help="also build Karpenter (KWOK cloud provider)"
    )
    dev_sub.choices["build"].add_argument(
        "--monitoring-crds",
        action="store_true",
        help="also fetch Prometheus Operator's PodMonitor CRD (the monitoring e2e test's)",
    )
    dev_sub.choices["build"].add_argument(
        "--versitygw",
        action="store_true",
        help="also build versitygw, the S3 server of the cold-tier e2e tests",
    )
    spot = dev_sub.add_parser(
        "spot", help="elastic fleet: spot capacity in a region runs out, or comes back"
    )
    spot.add_argument("availability", choices=("unavailable", "available"))
    spot.add_argument("--region", required=True, help="e.g. eu-west-1")
    spot.add_argument(
        "--product",
        help="only this GPU: instance type, GPU name or catalog product (default: every GPU)",
    )
    interrupt = dev_sub.add_parser(
        "interrupt", help="a spot interruption: taint the node now, take it after the notice"
    )
    interrupt.add_argument("node")
    interrupt.add_argument(
        "--notice",
        type=_seconds,
        default=120.0,
        metavar="SECONDS",
        help="seconds between the notice and the node going away (default 120, as on AWS)",
    )
    interrupt.add_argument(
        "--wait",
        action="store_true",
        help="block until the node is taken (default: return now; a helper takes it later)",
    )
    for p in dev_sub.choices.values():
        p.add_argument("--workdir", type=Path, help="state folder (default ./.tidal/dev)")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 seconds, got {text}")
    return value


def _agent_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    agent = sub.add_parser(
        "agent", help="the GPU telemetry node agent (NVML, or simulated for the local fleet)"
    )
    agent.add_argument(
        "--node-name",
        default=os.environ.get("NODE_NAME"),
        help="the Node to annotate (default $NODE_NAME, from the Downward API)",
    )
    agent.add_argument(
        "--simulate", action="store_true", help="simulated GPUs driven by a scenario, not NVML"
    )
    agent.add_argument(
        "--all-nodes",
        action="store_true",
        help="with --simulate: one process for every node labelled nvidia.com/gpu.present=true",
    )
    agent.add_argument("--scenario", type=Path, help="scenario file (default: the built-in one)")
    agent.add_argument("--interval", type=float, default=2.0, help="seconds between samples")
    agent.add_argument("--window", type=float, default=10.0, help="averaging window, seconds")
    agent.add_argument(
        "--heartbeat",
        type=float,
        default=60.0,
        help="publish at least this often, seconds (readers treat >120 s as stale)",
    )
    agent.add_argument(
        "--refresh",
        type=float,
        help="seconds between listing pods (and, simulated, nodes); default 30, simulated 3",
    )
    agent.add_argument(
        "--metrics-address",
        default="0.0.0.0:9400",
        metavar="HOST:PORT",
        help="where /metrics, /healthz and /readyz listen (default 0.0.0.0:9400)",
    )
    agent.add_argument(
        "--proc-root",
        type=Path,
        default=Path("/proc"),
        help="the host's /proc (hostPID), for process -> pod mapping",
    )
    agent.add_argument(
        "--once",
        action="store_true",
        help="print one reading as the annotation's JSON and exit (no API server needed)",
    )


def _gateway_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from tidal.gateway import config

    gateway = sub.add_parser(
        "gateway", help="the OpenAI-compatible gateway: routing, holding through cold starts"
    )
    config.add_arguments(gateway)


def _gateway(args: argparse.Namespace) -> int:
    from tidal.gateway import config, main

    try:
        settings = config.from_args(args)
    except ValueError as err:
        print(f"tidal gateway: error: {err}", file=sys.stderr)
        return 2
    return main.run(settings)


def _agent(args: argparse.Namespace) -> int:
    from tidal.agent.config import Config
    from tidal.agent.publishing import Thresholds

    host, _, port = args.metrics_address.rpartition(":")
    try:
        if args.once:
            config = Config(
                node_name=args.node_name or "local",
                simulate=args.simulate,
                scenario=args.scenario,
                proc_root=args.proc_root,
            )
        else:
            config = Config(
                node_name=args.node_name,
                simulate=args.simulate,
                all_nodes=args.all_nodes,
                scenario=args.scenario,
                interval_seconds=args.interval,
                window_seconds=args.window,
                refresh_seconds=args.refresh,
                thresholds=Thresholds(heartbeat_seconds=args.heartbeat),
                metrics_host=host or "0.0.0.0",
                metrics_port=int(port),
                proc_root=args.proc_root,
            )
    except ValueError as err:
        print(f"tidal agent: error: {err}", file=sys.stderr)
        return 2
    if args.once:
        # Not the loop's module: a reading needs neither kubernetes nor aiohttp (the GPU bundle).
        from tidal.agent import snapshot

        print(snapshot.once(config))
        return 0
    from tidal.agent import main as agent_main

    return agent_main.run(config)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "agent":
        return _agent(args)
    if args.command == "gateway":
        return _gateway(args)
    if args.command == "run":
        from tidal.controllers.main import run

        run(args.namespace, args.liveness)
        return 0
    if args.command == "crds":
        from tidal import crdgen

        crd_args = []
        if args.out:
            crd_args += ["--out", args.out]
        if args.check:
            crd_args.append("--check")
        return crdgen.main(crd_args)
    return _dev(args)


def _dev(args: argparse.Namespace) -> int:
    from tidal.devcluster import build, cluster, fleet, karpenter

    try:
        if args.dev_command == "up":
            state = cluster.up(args.workdir, args.fleet, startup_seconds=args.startup_seconds)
            print(f"export KUBECONFIG={state.kubeconfig}")
        elif args.dev_command == "down":
            cluster.down(args.workdir)
        elif args.dev_command == "status":
            print(cluster.status(args.workdir))
            return 0 if cluster.is_running(args.workdir or cluster.default_workdir()) else 3
        elif args.dev_command == "build":
            print(build.ensure_binaries())
            if args.karpenter:
                print(build.ensure_karpenter().binary)
            if args.monitoring_crds:
                print(build.ensure_podmonitor_crd())
            if args.versitygw:
                print(build.ensure_versitygw())
        elif args.dev_command == "kubeconfig":
            print((args.workdir or cluster.default_workdir()).absolute() / "kubeconfig")
        elif args.dev_command == "spot":
            karpenter.set_spot(
                args.workdir,
                args.region,
                available=args.availability == "available",
                product=args.product,
            )
        elif args.dev_command == "interrupt":
            karpenter.interrupt(args.workdir, args.node, args.notice, wait=args.wait)
    except (build.BuildError, cluster.ClusterError, fleet.FleetError) as err:
        print(f"tidal: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
