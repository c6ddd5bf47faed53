"""A traffic simulator: a process that exports inference-engine metrics with known distributions.

Each simulated endpoint serves requests at a fixed rate whose latency and time to first token
follow log-normal distributions given by their median and p95, and generates a fixed number of
tokens per request. The process exports what the real servers would, in their formats:

- `vllm`: `vllm:e2e_request_latency_seconds`, `vllm:time_to_first_token_seconds` (histograms with
  vLLM's bucket boundaries) and the counter `vllm:generation_tokens_total`, per pod, labelled
  `namespace` and `pod` as a Kubernetes scrape would label them (pods named like the endpoint's
  Deployments' pods: `<name>-spot-<hash>-<suffix>`, `<name>-reserved-...`);
- `tgi`: `tgi_request_duration` and `tgi_request_generated_tokens` histograms (TGI has no
  time-to-first-token metric);
- `gateway`: Tidal's gateway metrics, labelled `tidal_endpoint="<namespace>/<name>"`.

So the known answer is known exactly: the k-th request's quantiles are drawn from the golden-ratio
sequence (low discrepancy: any run of consecutive requests covers [0, 1) evenly), not from a random
generator, and requests complete at exactly `requests_per_second`. Time advances lazily: each
scrape (or profile change) first completes every request due since the last one.

A busy engine answers its metrics endpoint late (vLLM renders /metrics in the same process that
serves requests): `--scrape-delay-seconds` holds every /metrics reply that long after the values
were taken, so the newest sample reaches Prometheus's storage that much after its timestamp.

Run it as a process (`python -m tests.traffic.simulator --config FILE`); it prints
`listening http://127.0.0.1:PORT` once ready. `PUT /profiles/<format>/<namespace>/<name>` with a
profile JSON changes an endpoint's behaviour from now on (to degrade it, say). `Simulator` below
starts and stops that process for tests.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from statistics import NormalDist
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

REPO = Path(__file__).resolve().parents[2]

Format = Literal["vllm", "tgi", "gateway"]

# vLLM's bucket boundaries (vllm/v1/metrics/loggers.py, v0.11): the p95 Tidal reads is
# interpolated within these, so the simulator must use the same ones to be a fair stand-in.
VLLM_E2E_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
    120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip
VLLM_TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
    10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
# TGI's router uses exponential duration buckets (x1.5 from 0.1 ms); tokens in powers of two.
TGI_DURATION_BUCKETS = tuple(0.0001 * 1.5**i for i in range(1, 36))
TGI_TOKEN_BUCKETS = tuple(float(2**i) for i in range(12))

_GOLDEN = (math.sqrt(5) - 1) / 2
_Z95 = NormalDist().inv_cdf(0.95)


@dataclasses.dataclass(frozen=True)
class LogNormal:
    """A log-normal distribution of seconds, given by its median and 95th percentile."""

    median_seconds: float
    p95_seconds: float

    def __post_init__(self) -> None:
        if not 0 < self.median_seconds < self.p95_seconds:
            raise ValueError("need 0 < median < p95")

    @property
    def sigma(self) -> float:
        return math.log(self.p95_seconds / self.median_seconds) / _Z95

    def quantile(self, u: float) -> float:
        return self.median_seconds * math.exp(self.sigma * NormalDist().inv_cdf(u))

    def cdf(self, seconds: float) -> float:
        return NormalDist().cdf(math.log(seconds / self.median_seconds) / self.sigma)


@dataclasses.dataclass(frozen=True)
class Profile:
    """How an endpoint behaves: request rate, latency, time to first token, tokens per request."""

    requests_per_second: float
    latency: LogNormal
    ttft: LogNormal
    tokens_per_request: int

    @property
    def tokens_per_second(self) -> float:
        return self.requests_per_second * self.tokens_per_request

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Profile:
        return cls(
            requests_per_second=float(raw["requests_per_second"]),
            latency=LogNormal(**raw["latency"]),
            ttft=LogNormal(**raw["ttft"]),
            tokens_per_request=int(raw["tokens_per_request"]),
        )


@dataclasses.dataclass(frozen=True)
class SimulatedEndpoint:
    """One endpoint the simulator serves, in one metrics format, from `pods` pods."""

    namespace: str
    name: str
    format: Format
    profile: Profile
    pods: int = 2

    @property
    def key(self) -> str:
        return f"{self.format}/{self.namespace}/{self.name}"

    def pod_names(self) -> list[str]:
        # Alternate spot and reserved like the endpoint's two Deployments; hash-like suffixes.
        return [
            f"{self.name}-{('spot', 'reserved')[i % 2]}-5d8f7c9b4-p{i:04d}x"
            for i in range(self.pods)
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "format": self.format,
            "pods": self.pods,
            "profile": self.profile.to_json(),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> SimulatedEndpoint:
        return cls(
            namespace=raw["namespace"],
            name=raw["name"],
            format=raw["format"],
            pods=int(raw.get("pods", 2)),
            profile=Profile.from_json(raw["profile"]),
        )


def histogram_quantile(q: float, buckets: Sequence[float], dist: LogNormal) -> float:
    """What PromQL's histogram_quantile returns for `dist` observed in `buckets` (no noise).

    Prometheus interpolates linearly inside the bucket holding the quantile, so even perfect
    data reads slightly off the true quantile; tests compare against both numbers.
    """
    lower, below = 0.0, 0.0
    for upper in buckets:
        at_upper = dist.cdf(upper)
        if at_upper >= q:
            return lower + (upper - lower) * (q - below) / (at_upper - below)
        lower, below = upper, at_upper
    return buckets[-1]


# --- the exporting process -----------------------------------------------------------------


class _Metrics:
    """The exported series of every simulated endpoint, in one registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        pod = ["namespace", "pod", "model_name"]
        self.vllm_e2e = Histogram(
            "vllm:e2e_request_latency_seconds",
            "Histogram of end-to-end request latency in seconds.",
            pod,
            buckets=VLLM_E2E_BUCKETS,
            registry=self.registry,
        )
        self.vllm_ttft = Histogram(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            pod,
            buckets=VLLM_TTFT_BUCKETS,
            registry=self.registry,
        )
        self.vllm_tokens = Counter(
            "vllm:generation_tokens",
            "Number of generation tokens processed.",
            pod,
            registry=self.registry,
        )
        self.tgi_duration = Histogram(
            "tgi_request_duration",
            "Total time spent processing the request (e2e latency).",
            ["namespace", "pod"],
            buckets=TGI_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.tgi_tokens = Histogram(
            "tgi_request_generated_tokens",
            "Generated tokens per request.",
            ["namespace", "pod"],
            buckets=TGI_TOKEN_BUCKETS,
            registry=self.registry,
        )
        self.gw_duration = Histogram(
            "tidal_gateway_request_duration_seconds",
            "Request latency seen by Tidal's gateway.",
            ["tidal_endpoint"],
            buckets=VLLM_E2E_BUCKETS,
            registry=self.registry,
        )
        self.gw_ttft = Histogram(
            "tidal_gateway_time_to_first_token_seconds",
            "Time to first token seen by Tidal's gateway.",
            ["tidal_endpoint"],
            buckets=VLLM_TTFT_BUCKETS,
            registry=self.registry,
        )
        self.gw_tokens = Counter(
            "tidal_gateway_generated_tokens",
            "Tokens generated through Tidal's gateway.",
            ["tidal_endpoint"],
            registry=self.registry,
        )

    def complete(self, endpoint: SimulatedEndpoint, pod: str, u: float, profile: Profile) -> None:
        latency = profile.latency.quantile(u)
        ttft = profile.ttft.quantile(u)
        tokens = profile.tokens_per_request
        if endpoint.format == "vllm":
            labels = (endpoint.namespace, pod, "simulated/model")
            self.vllm_e2e.labels(*labels).observe(latency)
            self.vllm_ttft.labels(*labels).observe(ttft)
            self.vllm_tokens.labels(*labels).inc(tokens)
        elif endpoint.format == "tgi":
            self.tgi_duration.labels(endpoint.namespace, pod).observe(latency)
            self.tgi_tokens.labels(endpoint.namespace, pod).observe(tokens)
        else:
            label = f"{endpoint.namespace}/{endpoint.name}"
            self.gw_duration.labels(label).observe(latency)
            self.gw_ttft.labels(label).observe(ttft)
            self.gw_tokens.labels(label).inc(tokens)


class _Traffic:
    """Completes each endpoint's requests as wall time passes, one profile segment at a time."""

    def __init__(self, endpoints: Sequence[SimulatedEndpoint]) -> None:
        self.metrics = _Metrics()
        self._lock = threading.Lock()
        now = time.monotonic()
        self._endpoints = {e.key: e for e in endpoints}
        self._profiles = {e.key: e.profile for e in endpoints}
        self._segment_start = dict.fromkeys(self._endpoints, now)
        self._done_in_segment = dict.fromkeys(self._endpoints, 0)
        self._total = dict.fromkeys(self._endpoints, 0)

    def advance(self) -> None:
        with self._lock:
            self._advance(time.monotonic())

    def set_profile(self, key: str, profile: Profile) -> None:
        with self._lock:
            if key not in self._endpoints:
                raise KeyError(key)
            now = time.monotonic()
            self._advance(now)
            self._profiles[key] = profile
            self._segment_start[key] = now
            self._done_in_segment[key] = 0

    def exposition(self) -> bytes:
        self.advance()
        return generate_latest(self.metrics.registry)

    def _advance(self, now: float) -> None:
        for key, endpoint in self._endpoints.items():
            profile = self._profiles[key]
            due = int((now - self._segment_start[key]) * profile.requests_per_second)
            pods = endpoint.pod_names() or [endpoint.name]
            for _ in range(due - self._done_in_segment[key]):
                k = self._total[key]
                u = (0.5 + k * _GOLDEN) % 1.0
                self.metrics.complete(endpoint, pods[k % len(pods)], u, profile)
                self._total[key] = k + 1
            self._done_in_segment[key] = max(due, self._done_in_segment[key])


def _handler(traffic: _Traffic, scrape_delay_seconds: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                body = traffic.exposition()
                time.sleep(scrape_delay_seconds)
                self._reply(200, body, CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                self._reply(200, b"ok\n", "text/plain")
            else:
                self._reply(404, b"not found\n", "text/plain")

        def do_PUT(self) -> None:
            prefix = "/profiles/"
            if not self.path.startswith(prefix):
                self._reply(404, b"not found\n", "text/plain")
                return
            length = int(self.headers.get("Content-Length", "0"))
            try:
                profile = Profile.from_json(json.loads(self.rfile.read(length)))
                traffic.set_profile(self.path.removeprefix(prefix), profile)
            except KeyError as exc:
                self._reply(404, f"unknown endpoint {exc}\n".encode(), "text/plain")
                return
            except (ValueError, TypeError) as exc:
                self._reply(400, f"{exc}\n".encode(), "text/plain")
                return
            self._reply(204, b"", "text/plain")

        def _reply(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return  # a scrape every second would drown the test output

    return Handler


def serve(
    endpoints: Sequence[SimulatedEndpoint], port: int, scrape_delay_seconds: float = 0.0
) -> None:
    """Serve until killed; prints the listening URL once bound."""
    handler = _handler(_Traffic(endpoints), scrape_delay_seconds)
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    print(f"listening http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--config", type=Path, required=True, help="JSON list of endpoints")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument(
        "--scrape-delay-seconds", type=float, default=0.0, help="hold each /metrics reply"
    )
    args = parser.parse_args(argv)
    raw = json.loads(args.config.read_text())
    serve([SimulatedEndpoint.from_json(item) for item in raw], args.port, args.scrape_delay_seconds)


# --- the test-side handle ------------------------------------------------------------------


class Simulator:
    """A running simulator process; use `Simulator.running(endpoints)` as a context manager."""

    def __init__(self, process: subprocess.Popen[str], url: str, workdir: Path) -> None:
        self.process = process
        self.url = url
        self.workdir = workdir

    @property
    def target(self) -> str:
        """`host:port`, as a Prometheus scrape target."""
        return self.url.removeprefix("http://")

    @classmethod
    @contextlib.contextmanager
    def running(
        cls, endpoints: Sequence[SimulatedEndpoint], *, scrape_delay_seconds: float = 0.0
    ) -> Iterator[Simulator]:
        with (
            tempfile.TemporaryDirectory(prefix="tidal-traffic-") as tmp,
            (Path(tmp) / "stderr.log").open("w") as stderr,
        ):
            workdir = Path(tmp)
            config = workdir / "endpoints.json"
            config.write_text(json.dumps([e.to_json() for e in endpoints]))
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.traffic.simulator",
                    "--config",
                    str(config),
                    f"--scrape-delay-seconds={scrape_delay_seconds}",
                ],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
            try:
                assert process.stdout is not None
                line = process.stdout.readline().strip()
                if not line.startswith("listening "):
                    raise RuntimeError(
                        f"simulator did not start: {line!r}\n{(workdir / 'stderr.log').read_text()}"
                    )
                yield cls(process, line.removeprefix("listening "), workdir)
            finally:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)
                if process.stdout is not None:
                    process.stdout.close()

    def set_profile(self, endpoint: SimulatedEndpoint, profile: Profile) -> None:
        """Change how `endpoint` behaves from now on."""
        request = urllib.request.Request(
            f"{self.url}/profiles/{endpoint.key}",
            data=json.dumps(profile.to_json()).encode(),
            method="PUT",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 204, response.status


if __name__ == "__main__":
    main()
