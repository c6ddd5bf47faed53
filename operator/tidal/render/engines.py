"""What each serving engine needs, inside a replica's pod, to serve `model.name` from `model.uri`.

Owns the engine-specific knowledge of a replica, as pod parts (`EnginePod`) that
`tidal.render.endpoint` composes into its Deployments:

- the engine's command-line arguments, each checked against the engine's documented CLI (cited
  where they are built), and the precedence of `runtime.args` over them (`_merge_args`);
- where the weights are inside the pod for each model source (`tidal.api.sources`): the Hub id
  or bucket URI the engine reads itself, a PersistentVolumeClaim mounted read-only, or an init
  container that copies a bucket into the pod first (`fetch_weights_container`, reusable by
  anything that must fill a directory from a bucket);
- the startup, liveness and readiness probes on each engine's own health endpoints, and the
  startup probe's arithmetic (`startup_failure_threshold`);
- `/dev/shm` sizing for tensor parallelism (`shm_size_limit`), the ephemeral-storage request
  when the weights land on the node's disk (`ephemeral_storage_request`), and the environment
  every engine needs under a non-root user with no passwd entry;
- where each engine serves Prometheus metrics (`metrics_port_name`, `metrics_ports`), which the
  endpoint's PodMonitor scrapes (`tidal.render.monitoring`).

Must not: decide replicas, placement or anything of the Deployment around the pod, do IO, know
Kopf, or import another decision package. A source an engine cannot read is a PermanentError
whose message starts with the field (`spec.model.uri ...`), so the reconcile reports InvalidSpec
and the admission webhook refuses the spec up front (it renders every child).
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from tidal.api.endpoint import (
    CACHE_NOT_ON_PVC,
    FETCH_WEIGHTS_IMAGE,
    TRITON_NEEDS_REPOSITORY,
    Engine,
    InferenceEndpoint,
    Quantization,
)
from tidal.api.sources import (
    HubSource,
    ModelSource,
    ModelURIError,
    ObjectStoreSource,
    PVCSource,
)
from tidal.errors import PermanentError

__all__ = [
    "CACHE_DIR",
    "CONTAINER_SECURITY_CONTEXT",
    "METRICS_PATH",
    "METRICS_PORT_NAME",
    "MODEL_DIR",
    "PORT_NAME",
    "EnginePod",
    "cacheable_source",
    "cached_source",
    "engine_pod",
    "ephemeral_storage_request",
    "fetch_weights_container",
    "merge_env",
    "metrics_port_name",
    "metrics_ports",
    "model_cache_name",
    "replica_source",
    "shm_size_limit",
    "startup_failure_threshold",
]

Object = dict[str, Any]

PORT_NAME: Final = "http"
# Engines write caches under $HOME and $HF_HOME (Hub downloads, torch.compile and Triton kernel
# caches); under a non-root user with no writable home the first write fails, so give them one.
CACHE_VOLUME: Final = "cache"
CACHE_DIR: Final = "/var/cache/tidal"
SHM_VOLUME: Final = "dshm"
# Where local weights are inside the pod: a PersistentVolumeClaim's root, or the directory the
# fetch init container fills.
MODEL_VOLUME: Final = "model"
MODEL_DIR: Final = "/models"
# getpass.getuser(), which torch and some engines call, reads LOGNAME, USER, LNAME and USERNAME
# before the passwd database; uid 1000 has no passwd entry in most engine images.
USER_NAME: Final = "tidal"

# The restricted Pod Security profile, for every container Tidal runs in a replica.
CONTAINER_SECURITY_CONTEXT: Final[Mapping[str, Any]] = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}

# --- probes ------------------------------------------------------------------------------------

# (liveness path, readiness path). vLLM: GET /health answers 200 once the engine serves and 5xx
# when its engine core died (docs.vllm.ai, "OpenAI-Compatible Server", /health). TGI: GET /health
# (huggingface.co/docs/text-generation-inference, API reference "Health check method"). Triton:
# the KServe v2 health API, /v2/health/live (the server runs) and /v2/health/ready (the models are
# loaded; docs.nvidia.com Triton "HTTP/REST and GRPC Protocol"). A Custom engine's paths are
# unknown: an open port is all Tidal can check.
_HEALTH_PATHS: Final[Mapping[Engine, tuple[str, str]]] = {
    Engine.VLLM: ("/health", "/health"),
    Engine.TGI: ("/health", "/health"),
    Engine.Triton: ("/v2/health/live", "/v2/health/ready"),
}
# The startup probe checks often (a wake from zero waits on it) and gives up only once
# `runtime.startupTimeoutSeconds` has passed: failureThreshold x periodSeconds covers it.
STARTUP_PERIOD_SECONDS: Final = 5
# A hung engine is restarted after about a minute of failed health checks; a busy one still
# answers (vLLM's health check runs no inference; TGI's runs a one-token prefill only when
# nothing was generated recently).
LIVENESS_PERIOD_SECONDS: Final = 10
LIVENESS_FAILURE_THRESHOLD: Final = 6
READINESS_PERIOD_SECONDS: Final = 5
READINESS_FAILURE_THRESHOLD: Final = 3


def startup_failure_threshold(startup_timeout_seconds: int) -> int:
    """Failures the startup probe tolerates: the fewest whose periods cover the timeout."""
    return max(1, -(-startup_timeout_seconds // STARTUP_PERIOD_SECONDS))


def _probes(engine: Engine, startup_timeout_seconds: int) -> dict[str, Object]:
    paths = _HEALTH_PATHS.get(engine)

    def action(path: str | None) -> Object:
        if path is None:
            return {"tcpSocket": {"port": PORT_NAME}}
        return {"httpGet": {"path": path, "port": PORT_NAME}}

    live, ready = paths if paths is not None else (None, None)
    return {
        "startupProbe": {
            **action(ready),
            "periodSeconds": STARTUP_PERIOD_SECONDS,
            "timeoutSeconds": 5,
            "failureThreshold": startup_failure_threshold(startup_timeout_seconds),
        },
        "livenessProbe": {
            **action(live),
            "periodSeconds": LIVENESS_PERIOD_SECONDS,
            "timeoutSeconds": 5,
            "failureThreshold": LIVENESS_FAILURE_THRESHOLD,
        },
        "readinessProbe": {
            **action(ready),
            "periodSeconds": READINESS_PERIOD_SECONDS,
            "timeoutSeconds": 2,
            "failureThreshold": READINESS_FAILURE_THRESHOLD,
        },
    }


# --- sizing ------------------------------------------------------------------------------------


def shm_size_limit(gpu_count: int) -> str:
    """The `/dev/shm` size of a replica: 1 GiB per GPU, at least 2 GiB.

    PyTorch workers and NCCL share tensors through /dev/shm, and a container's default is 64 MiB.
    vLLM's Kubernetes guide mounts 2 GiB; TGI's asks for 1 GiB for NCCL's fallback to host
    memory when GPUs cannot talk peer to peer; NCCL's shared-memory transport keeps buffers per
    peer, so the need grows with the tensor-parallel degree. The pages count toward the pod's
    memory, so a `runtime.memory` must leave room for them.
    """
    return f"{max(2, gpu_count)}Gi"


# Weights on the node's disk: the checkpoint (weightsGiB, the 16-bit size, is an upper bound),
# 20% for what a download leaves beside it (tokenizer, configs, Triton's localized copy of a
# bucket's files), and 10 GiB for compile caches and logs.
_STORAGE_SHARE: Final = (6, 5)
_STORAGE_EXTRA_GIB: Final = 10


def ephemeral_storage_request(weights_gib: int) -> str:
    """What a replica that downloads `weights_gib` of weights onto its node asks for."""
    numerator, denominator = _STORAGE_SHARE
    return f"{-(-weights_gib * numerator // denominator) + _STORAGE_EXTRA_GIB}Gi"


# --- model sources -----------------------------------------------------------------------------


_CACHE_PREFIX: Final = "tidal-model-"


def model_cache_name(source: ModelSource) -> str:
    """The name of the shared cache of `source` (its claim and loader Job, in each namespace):
    the same for every endpoint whose weights come from the same URI and revision, and a new
    cache when either changes (a new revision is new weights)."""
    return _CACHE_PREFIX + hashlib.sha256(source.uri.encode()).hexdigest()[:12]


def cached_source(ie: InferenceEndpoint) -> ModelSource | None:
    """The model source `ie`'s replicas read: with `model.cache`, the cache's claim (whose root
    holds the files the loader Job copied), else `replica_source(ie)`."""
    if ie.spec.model.cache is None:
        return replica_source(ie)
    return PVCSource(claim=model_cache_name(cacheable_source(ie)))


def cacheable_source(ie: InferenceEndpoint) -> HubSource | ObjectStoreSource:
    """The source `model.cache` copies (a PermanentError naming the field for one it cannot)."""
    source = replica_source(ie)
    if source is None:
        raise PermanentError(
            "spec.model.cache needs spec.model.uri with a Custom engine: Tidal cannot tell what "
            "to download"
        )
    if isinstance(source, PVCSource):  # refused by the schema too
        raise PermanentError(f"spec.{CACHE_NOT_ON_PVC}")
    return source


def replica_source(ie: InferenceEndpoint) -> ModelSource | None:
    """The model source `ie`'s replicas load, checked against what its engine can read.

    None for a Custom engine without `model.uri`: Tidal points a Custom engine at nothing.
    """
    model, engine = ie.spec.model, ie.spec.runtime.engine
    if engine is Engine.Custom and model.uri is None:
        return None
    try:
        source = model.source
    except ModelURIError as exc:
        raise PermanentError(str(exc)) from exc
    if engine is Engine.Triton and isinstance(source, HubSource):
        # Triton loads a model repository (a directory of <model>/<version>/ files), which a
        # Hub model repository is not.
        raise PermanentError(f"spec.{TRITON_NEEDS_REPOSITORY}")
    return source


@dataclass(frozen=True)
class _Weights:
    """Where one replica's engine finds the weights, and what the pod needs for that.

    `location`: what the engine is pointed at (a Hub repo id, a bucket URI, a local directory);
    None when Tidal points the engine at nothing. `on_disk`: the weights are written to the
    node's disk (a Hub download, a fetched bucket, Triton's localized repository)."""

    location: str | None
    on_disk: bool
    volumes: tuple[Object, ...] = ()
    mounts: tuple[Object, ...] = ()
    init_containers: tuple[Object, ...] = ()


def _weights(ie: InferenceEndpoint, source: ModelSource | None) -> _Weights:
    engine = ie.spec.runtime.engine
    if source is None:  # a Custom engine reading whatever it reads; the Hub by default
        return _Weights(location=None, on_disk=True)
    if isinstance(source, HubSource):
        return _Weights(location=source.repo, on_disk=True)
    if isinstance(source, PVCSource):
        location = f"{MODEL_DIR}/{source.path}" if source.path else MODEL_DIR
        volume = {
            "name": MODEL_VOLUME,
            "persistentVolumeClaim": {"claimName": source.claim, "readOnly": True},
        }
        return _Weights(
            location=location, on_disk=False, volumes=(volume,), mounts=(_model_mount(),)
        )
    if engine is Engine.VLLM:
        # vLLM streams safetensors straight from s3:// and gs:// into GPU memory with the Run:ai
        # Model Streamer (--load-format runai_streamer; docs.vllm.ai, "Loading models with
        # Run:ai Model Streamer"); its image ships runai-model-streamer[s3,gcs].
        return _Weights(location=source.uri, on_disk=False)
    if engine is Engine.Triton:
        # Triton reads s3:// and gs:// model repositories itself and localizes the files it loads
        # into a temporary directory (Triton docs, "Model Repository", cloud storage).
        return _Weights(location=source.uri, on_disk=True)
    # TGI (--model-id is a Hub id or a local directory) and Custom engines read local files: an
    # init container copies the bucket into the pod before the engine starts.
    user_env = [var.to_wire() for var in ie.spec.runtime.env]  # credentials, endpoints
    fetch = fetch_weights_container(source, MODEL_DIR, env=user_env, resources=_cpu_memory(ie))
    volume = {"name": MODEL_VOLUME, "emptyDir": {}}
    return _Weights(
        location=MODEL_DIR,
        on_disk=True,
        volumes=(volume,),
        mounts=(_model_mount(),),
        init_containers=(fetch,),
    )


def _model_mount() -> Object:
    # Read-only: an engine that tried to convert weights in place would corrupt a shared volume.
    return {"name": MODEL_VOLUME, "mountPath": MODEL_DIR, "readOnly": True}


# rclone's S3 and GCS backends take their settings from RCLONE_<BACKEND>_<OPTION> variables;
# env_auth makes them use the runtime's credentials: the AWS SDK chain (AWS_* variables, IRSA's
# web identity token, EKS Pod Identity, instance roles) and Google's application default
# credentials (GOOGLE_APPLICATION_CREDENTIALS, workload identity). rclone.org/s3/#authentication,
# rclone.org/googlecloudstorage/ (env_auth).
_FETCH_BACKENDS: Final[Mapping[str, tuple[str, tuple[tuple[str, str], ...]]]] = {
    "s3": ("s3", (("RCLONE_S3_ENV_AUTH", "true"), ("RCLONE_S3_PROVIDER", "AWS"))),
    "gs": ("gcs", (("RCLONE_GCS_ENV_AUTH", "true"),)),
}


def fetch_weights_container(
    source: ObjectStoreSource,
    dest_dir: str,
    *,
    volume: str = MODEL_VOLUME,
    env: Sequence[Object] = (),
    resources: Object | None = None,
    name: str = "fetch-weights",
) -> Object:
    """A container that copies `source` (every object under its prefix) into `dest_dir`, where
    it mounts `volume` (the caller's pod defines it), then exits.

    `rclone copy` (FETCH_WEIGHTS_IMAGE): files already there with the same size and time are
    skipped, so a retried or repeated fetch only copies what is missing. Credentials come from
    the pod's identity or from `env` (e.g. AWS_ACCESS_KEY_ID from a Secret); `env` also
    overrides the backend settings by name, e.g. RCLONE_S3_PROVIDER=Minio and
    RCLONE_S3_ENDPOINT for an S3-compatible store. `resources` (cpu and memory) should match the
    main container's so the pod's QoS class stays what it would be without the fetch.
    """
    backend, settings = _FETCH_BACKENDS[source.scheme]
    remote = f":{backend}:{source.bucket}" + (f"/{source.prefix}" if source.prefix else "")
    defaults = [{"name": key, "value": value} for key, value in settings]
    container: Object = {
        "name": name,
        "image": FETCH_WEIGHTS_IMAGE,
        "args": [
            "copy",
            remote,
            dest_dir,
            # Model shards are a few GB each: several files at once, each in parallel streams.
            "--transfers=8",
            "--multi-thread-streams=8",
            "--fast-list",
            "--stats=30s",
            "--stats-one-line",
            "--stats-log-level=NOTICE",
        ],
        # rclone looks for a config file under $HOME; no file is needed, a writable home is.
        "env": merge_env([{"name": "HOME", "value": "/tmp"}, *defaults], env),
        "securityContext": copy.deepcopy(dict(CONTAINER_SECURITY_CONTEXT)),
        "volumeMounts": [{"name": volume, "mountPath": dest_dir}],
    }
    if resources:
        container["resources"] = copy.deepcopy(resources)
    return container


def _cpu_memory(ie: InferenceEndpoint) -> Object | None:
    runtime = ie.spec.runtime
    requests = {
        key: value
        for key, value in (("cpu", runtime.cpu), ("memory", runtime.memory))
        if value is not None
    }
    return {"requests": requests, "limits": dict(requests)} if requests else None


# --- arguments ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Arg:
    """One of Tidal's arguments: `tokens` as written, and the flag name a user flag replaces it
    by (None: never replaced, e.g. the program name)."""

    flag: str | None
    tokens: tuple[str, ...]


def _flag(name: str, value: str) -> _Arg:
    return _Arg(name, (name, value))


def _flag_eq(name: str, value: str) -> _Arg:
    return _Arg(name, (f"{name}={value}",))


# Short spellings the engines document for flags Tidal sets: vLLM `-tp`, `-q` (Engine
# Arguments); TGI `-p` (launcher reference).
_ALIASES: Final[Mapping[Engine, Mapping[str, str]]] = {
    Engine.VLLM: {"-tp": "--tensor-parallel-size", "-q": "--quantization"},
    Engine.TGI: {"-p": "--port"},
}
_FLAG_TOKEN = re.compile(r"(--?[A-Za-z][-_A-Za-z0-9]*)(=.*)?", re.DOTALL)


def _flag_name(engine: Engine, token: str) -> str | None:
    match = _FLAG_TOKEN.fullmatch(token)
    if match is None:
        return None
    name = _ALIASES.get(engine, {}).get(match.group(1), match.group(1))
    if engine is Engine.VLLM and name.startswith("--"):
        # vLLM's parser takes --tensor_parallel_size for --tensor-parallel-size.
        name = "--" + name[2:].replace("_", "-")
    return name


def _merge_args(engine: Engine, tidal: Sequence[_Arg], user: Sequence[str]) -> list[str]:
    """Tidal's arguments, less those a user flag of the same name replaces, then `user`'s.

    A user flag replaces Tidal's whether written `--flag value` or `--flag=value` (or by a short
    alias the engine documents), rather than repeating it: TGI's parser refuses a repeated flag,
    and for the others the last one silently wins. User arguments keep their order.
    """
    replaced = {name for token in user if (name := _flag_name(engine, token)) is not None}
    kept = [token for arg in tidal if arg.flag not in replaced for token in arg.tokens]
    return kept + list(user)


def _vllm_args(ie: InferenceEndpoint, source: ModelSource, location: str) -> list[_Arg]:
    """`vllm serve` (the image's entrypoint) arguments, checked against the vLLM CLI reference
    (docs.vllm.ai, "vllm serve" and "Engine Arguments"): the model is the positional argument
    (`--model` is deprecated for `vllm serve`; a user `--model` replaces it), served as
    `--served-model-name`."""
    model, runtime, gpus = ie.spec.model, ie.spec.runtime, ie.spec.gpu.count
    args = [_Arg("--model", (location,)), _flag("--served-model-name", model.name)]
    if isinstance(source, HubSource) and source.revision:
        args.append(_flag("--revision", source.revision))
    if gpus > 1:
        args.append(_flag("--tensor-parallel-size", str(gpus)))
    if model.quantization is Quantization.FP8:
        # Online FP8 (W8A8) quantization of a 16-bit checkpoint ("FP8 W8A8"). INT8 and INT4 are
        # pre-quantized checkpoints (GPTQ, AWQ, compressed-tensors) whose config.json names the
        # method, which vLLM detects and loads with no flag.
        args.append(_flag("--quantization", "fp8"))
    if isinstance(source, ObjectStoreSource):
        args.append(_flag("--load-format", "runai_streamer"))
    args.append(_flag("--port", str(runtime.port)))
    return args


def _tgi_args(ie: InferenceEndpoint, source: ModelSource, location: str) -> list[_Arg]:
    """`text-generation-launcher` (the image's entrypoint) arguments, checked against TGI's
    launcher reference (huggingface.co/docs/text-generation-inference, "Text-generation-launcher
    arguments"). The pinned launcher has no `--served-model-name`; its OpenAI-compatible routes
    ignore the request's `model` field, so clients sending model.name are served."""
    model, runtime = ie.spec.model, ie.spec.runtime
    args = [_flag("--model-id", location)]
    if isinstance(source, HubSource) and source.revision:
        args.append(_flag("--revision", source.revision))
    # Explicit: by default the launcher shards over every GPU it can see, which depends on how
    # the device plugin exposes them.
    args.append(_flag("--num-shard", str(ie.spec.gpu.count)))
    if model.quantization is Quantization.FP8:
        # `--quantize fp8`: FP8 (e4m3) weights quantized at load. INT8 and INT4 checkpoints are
        # pre-quantized (GPTQ, AWQ, EXL2, compressed-tensors), and TGI reads their method from
        # the model's configuration: no flag.
        args.append(_flag("--quantize", "fp8"))
    args.append(_flag("--port", str(runtime.port)))
    return args


def _triton_args(ie: InferenceEndpoint, location: str) -> list[_Arg]:
    """`tritonserver` arguments (the image has no server entrypoint), checked against Triton's
    "Model Repository" guide (local, s3:// and gs:// repositories) and `tritonserver --help`."""
    return [
        _Arg(None, ("tritonserver",)),
        _flag_eq("--model-repository", location),
        _flag_eq("--http-port", str(ie.spec.runtime.port)),
        # The latency metrics Tidal's SLO queries read (`tidal.clients.prometheus`): a p95
        # summary of request time and a histogram of time to first response ("Metrics" guide).
        # Repeatable settings, so never replaced: a user's --metrics-config adds its own after.
        _Arg(None, ("--metrics-config=summary_latencies=true",)),
        _Arg(None, ("--metrics-config=histogram_latencies=true",)),
    ]


def _engine_args(ie: InferenceEndpoint, source: ModelSource | None, weights: _Weights) -> list[str]:
    engine = ie.spec.runtime.engine
    tidal: list[_Arg] = []
    if source is not None and weights.location is not None:
        if engine is Engine.VLLM:
            tidal = _vllm_args(ie, source, weights.location)
        elif engine is Engine.TGI:
            tidal = _tgi_args(ie, source, weights.location)
        elif engine is Engine.Triton:
            tidal = _triton_args(ie, weights.location)
    return _merge_args(engine, tidal, ie.spec.runtime.args)


# --- environment -------------------------------------------------------------------------------


def _env(ie: InferenceEndpoint) -> list[Object]:
    defaults = [
        {"name": "HOME", "value": CACHE_DIR},
        {"name": "USER", "value": USER_NAME},
        {"name": "LOGNAME", "value": USER_NAME},
        {"name": "HF_HOME", "value": f"{CACHE_DIR}/huggingface"},
    ]
    return merge_env(defaults, [var.to_wire() for var in ie.spec.runtime.env])


def merge_env(defaults: Sequence[Object], user: Sequence[Object]) -> list[Object]:
    """`defaults` less those `user` names, then `user`'s: a user variable overrides a default by
    name, and a duplicate name would make server-side apply refuse the list (env is keyed by
    name)."""
    names = {var["name"] for var in user}
    return [copy.deepcopy(var) for var in defaults if var["name"] not in names] + [
        copy.deepcopy(var) for var in user
    ]


# --- the pod -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnginePod:
    """The engine-specific parts of a replica's pod, fresh objects on every call.

    `args`, `env`, `probes` (startupProbe, livenessProbe, readinessProbe), `volume_mounts` and
    `ephemeral_storage` (a request, or None) belong to the engine container; `volumes` and
    `init_containers` to the pod."""

    args: list[str]
    env: list[Object]
    probes: dict[str, Object]
    volume_mounts: list[Object]
    volumes: list[Object]
    init_containers: list[Object]
    ephemeral_storage: str | None


def engine_pod(ie: InferenceEndpoint) -> EnginePod:
    """What `ie`'s engine needs in each replica's pod (PermanentError when it cannot serve the
    model source, naming the field)."""
    runtime, model = ie.spec.runtime, ie.spec.model
    # With a cache the replicas read its claim, read-only, like any pvc:// source: no download,
    # no fetch init container, no ephemeral storage for the weights, no --revision.
    source = cached_source(ie)
    weights = _weights(ie, source)
    storage = (
        ephemeral_storage_request(model.weights_gib)
        if weights.on_disk and model.weights_gib is not None
        else None
    )
    return EnginePod(
        args=_engine_args(ie, source, weights),
        env=_env(ie),
        probes=_probes(runtime.engine, runtime.startup_timeout_seconds),
        volume_mounts=[
            {"name": CACHE_VOLUME, "mountPath": CACHE_DIR},
            {"name": SHM_VOLUME, "mountPath": "/dev/shm"},
            *(copy.deepcopy(m) for m in weights.mounts),
        ],
        volumes=[
            {"name": CACHE_VOLUME, "emptyDir": {}},
            {
                "name": SHM_VOLUME,
                "emptyDir": {"medium": "Memory", "sizeLimit": shm_size_limit(ie.spec.gpu.count)},
            },
            *(copy.deepcopy(v) for v in weights.volumes),
        ],
        init_containers=[copy.deepcopy(c) for c in weights.init_containers],
        ephemeral_storage=storage,
    )


# --- where each engine serves Prometheus metrics (`render.monitoring` scrapes them there) -----

# vLLM's OpenAI server and TGI's router serve `/metrics` on their HTTP port (vLLM "Production
# Metrics"; TGI "Metrics"). Triton serves it from a metrics server of its own on 8002, the
# default of `--metrics-port` (Triton "Metrics"), which Tidal does not change.
METRICS_PATH: Final = "/metrics"
METRICS_PORT_NAME: Final = "metrics"
TRITON_METRICS_PORT: Final = 8002


def metrics_port_name(engine: Engine) -> str | None:
    """The name of the container port `engine` serves `METRICS_PATH` on; None for a Custom
    engine, whose metrics (if any) Tidal does not know."""
    if engine is Engine.Triton:
        return METRICS_PORT_NAME
    if engine in (Engine.VLLM, Engine.TGI):
        return PORT_NAME
    return None


def metrics_ports(engine: Engine) -> list[Object]:
    """The engine container's ports besides its HTTP port that metrics need: a scrape selects its
    target by a named container port, and Triton's metrics port would otherwise be undeclared."""
    if engine is not Engine.Triton:
        return []
    return [{"name": METRICS_PORT_NAME, "containerPort": TRITON_METRICS_PORT, "protocol": "TCP"}]
