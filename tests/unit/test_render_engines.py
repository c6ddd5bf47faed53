"""Engine pods (tidal.render.engines, composed by tidal.render.endpoint): golden renders per
engine x GPU count x model source, each whole container and pod part written out by hand.

Every expected argument list below was reviewed against the engine's own CLI documentation:

- vLLM (`vllm serve`, the vllm/vllm-openai image's entrypoint): docs.vllm.ai "vllm serve" and
  "Engine Arguments" (positional model; --served-model-name, --revision,
  --tensor-parallel-size/-tp, --quantization/-q, --load-format, --port; `--model` is deprecated
  for `vllm serve`), "Loading models with Run:ai Model Streamer" (s3://, gs:// with
  --load-format runai_streamer), "FP8 W8A8" (--quantization fp8 quantizes a 16-bit checkpoint).
- TGI (`text-generation-launcher`, the image's entrypoint): huggingface.co/docs/
  text-generation-inference/reference/launcher (--model-id: a Hub id or a local directory;
  --revision; --num-shard; --quantize fp8; -p/--port; no --served-model-name in 3.3.x).
- Triton (`tritonserver`): Triton "Model Repository" (--model-repository=<local path, s3://,
  gs://>) and `tritonserver --help` (--http-port); KServe v2 health (/v2/health/live, /ready).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidal.api.endpoint import InferenceEndpoint, Quantization
from tidal.api.labels import CapacityType
from tidal.api.sources import ObjectStoreSource
from tidal.errors import PermanentError
from tidal.render.endpoint import Share, render_deployment
from tidal.render.engines import (
    STARTUP_PERIOD_SECONDS,
    ephemeral_storage_request,
    fetch_weights_container,
    shm_size_limit,
    startup_failure_threshold,
)
from tidal.residency.admission import Problem, named_problem

# What Tidal adds to every Triton command line for its SLO queries (repeatable, never replaced).
TRITON_METRICS = [
    "--metrics-config=summary_latencies=true",
    "--metrics-config=histogram_latencies=true",
]
NAME = "llama-8b"  # what clients send: an alias, not the Hub id
REPO = "meta-llama/Llama-3.1-8B-Instruct"
URIS = {
    "hf": f"hf://{REPO}",
    "hf@rev": f"hf://{REPO}@0e9e39f",
    "s3": "s3://models-eu/llama-8b/",
    "gs": "gs://models-eu/llama-8b",
    "pvc": "pvc://weights/llama-8b",
}
CUSTOM_IMAGE = "registry.example.com/server:1"
CUSTOM_ARGS = ["--listen", "0.0.0.0:8000"]
IMAGES = {
    "VLLM": "vllm/vllm-openai:v0.31.0",
    "TGI": "ghcr.io/huggingface/text-generation-inference:3.3.7",
    "Triton": "nvcr.io/nvidia/tritonserver:26.09-py3",
    "Custom": CUSTOM_IMAGE,
}


def make_ie(engine: str, gpus: int, uri: str | None, **runtime: Any) -> InferenceEndpoint:
    model: dict[str, Any] = {"name": NAME, "weightsGiB": 16}
    if uri is not None:
        model["uri"] = uri
    run: dict[str, Any] = {"engine": engine, **runtime}
    if engine == "Custom":
        run.setdefault("image", CUSTOM_IMAGE)
        run.setdefault("args", CUSTOM_ARGS)
    return InferenceEndpoint.model_validate(
        {
            "metadata": {"name": "chat", "namespace": "ml", "uid": "u-1"},
            "spec": {
                "model": model,
                "runtime": run,
                "gpu": {"count": gpus},
                "residency": {"regions": ["eu-west-1"]},
            },
        }
    )


def pod_of(ie: InferenceEndpoint) -> dict[str, Any]:
    deployment = render_deployment(ie, CapacityType.RESERVED, Share(1, ("eu-west-1",)))
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


# --- what every replica gets -------------------------------------------------------------------

ENV = [
    {"name": "HOME", "value": "/var/cache/tidal"},
    {"name": "USER", "value": "tidal"},
    {"name": "LOGNAME", "value": "tidal"},
    {"name": "HF_HOME", "value": "/var/cache/tidal/huggingface"},
]
SECURITY = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
BASE_MOUNTS = [
    {"name": "cache", "mountPath": "/var/cache/tidal"},
    {"name": "dshm", "mountPath": "/dev/shm"},
]
MODEL_MOUNT = {"name": "model", "mountPath": "/models", "readOnly": True}
PVC_VOLUME = {
    "name": "model",
    "persistentVolumeClaim": {"claimName": "weights", "readOnly": True},
}
FETCHED_VOLUME = {"name": "model", "emptyDir": {}}


def probes(live: dict[str, Any], ready: dict[str, Any]) -> dict[str, Any]:
    # 1800 s (the default startupTimeoutSeconds) = 360 failures x 5 s.
    return {
        "startupProbe": {**ready, "periodSeconds": 5, "timeoutSeconds": 5, "failureThreshold": 360},
        "livenessProbe": {**live, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 6},
        "readinessProbe": {**ready, "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 3},
    }


HEALTH = {"httpGet": {"path": "/health", "port": "http"}}
PROBES = {
    "VLLM": probes(HEALTH, HEALTH),
    "TGI": probes(HEALTH, HEALTH),
    "Triton": probes(
        {"httpGet": {"path": "/v2/health/live", "port": "http"}},
        {"httpGet": {"path": "/v2/health/ready", "port": "http"}},
    ),
    "Custom": probes({"tcpSocket": {"port": "http"}}, {"tcpSocket": {"port": "http"}}),
}


def fetch(remote: str, env: list[dict[str, str]]) -> dict[str, Any]:
    """The init container copying a bucket into /models (rclone copy, env_auth)."""
    return {
        "name": "fetch-weights",
        "image": "rclone/rclone:1.75.2",
        "args": [
            "copy",
            remote,
            "/models",
            "--transfers=8",
            "--multi-thread-streams=8",
            "--fast-list",
            "--stats=30s",
            "--stats-one-line",
            "--stats-log-level=NOTICE",
        ],
        "env": [{"name": "HOME", "value": "/tmp"}, *env],
        "securityContext": SECURITY,
        "volumeMounts": [{"name": "model", "mountPath": "/models"}],
    }


FETCH_S3 = fetch(
    ":s3:models-eu/llama-8b",
    [
        {"name": "RCLONE_S3_ENV_AUTH", "value": "true"},
        {"name": "RCLONE_S3_PROVIDER", "value": "AWS"},
    ],
)
FETCH_GS = fetch(":gcs:models-eu/llama-8b", [{"name": "RCLONE_GCS_ENV_AUTH", "value": "true"}])

# --- the golden table --------------------------------------------------------------------------
# (engine, source) -> (args for 1 GPU, args for 4 GPUs, weights on the node's disk, init container,
# model volume). 16 GiB of weights on disk ask for ceil(16 x 1.2) + 10 = 30 GiB.

TP4 = ["--tensor-parallel-size", "4"]
GOLDEN: dict[tuple[str, str], tuple[list[str], list[str], bool, Any, Any]] = {
    # vLLM: the model positional, served as NAME; the Hub revision; TP only above one GPU.
    ("VLLM", "hf"): (
        [REPO, "--served-model-name", NAME, "--port", "8000"],
        [REPO, "--served-model-name", NAME, *TP4, "--port", "8000"],
        True,
        None,
        None,
    ),
    ("VLLM", "hf@rev"): (
        [REPO, "--served-model-name", NAME, "--revision", "0e9e39f", "--port", "8000"],
        [REPO, "--served-model-name", NAME, "--revision", "0e9e39f", *TP4, "--port", "8000"],
        True,
        None,
        None,
    ),
    # Buckets are streamed to the GPUs (Run:ai Model Streamer): nothing lands on disk.
    ("VLLM", "s3"): (
        [
            "s3://models-eu/llama-8b",
            "--served-model-name",
            NAME,
            "--load-format",
            "runai_streamer",
            "--port",
            "8000",
        ],
        [
            "s3://models-eu/llama-8b",
            "--served-model-name",
            NAME,
            *TP4,
            "--load-format",
            "runai_streamer",
            "--port",
            "8000",
        ],
        False,
        None,
        None,
    ),
    ("VLLM", "gs"): (
        [
            "gs://models-eu/llama-8b",
            "--served-model-name",
            NAME,
            "--load-format",
            "runai_streamer",
            "--port",
            "8000",
        ],
        [
            "gs://models-eu/llama-8b",
            "--served-model-name",
            NAME,
            *TP4,
            "--load-format",
            "runai_streamer",
            "--port",
            "8000",
        ],
        False,
        None,
        None,
    ),
    ("VLLM", "pvc"): (
        ["/models/llama-8b", "--served-model-name", NAME, "--port", "8000"],
        ["/models/llama-8b", "--served-model-name", NAME, *TP4, "--port", "8000"],
        False,
        None,
        PVC_VOLUME,
    ),
    # TGI: --model-id is a Hub id or a local directory; a bucket is fetched into /models first.
    ("TGI", "hf"): (
        ["--model-id", REPO, "--num-shard", "1", "--port", "8000"],
        ["--model-id", REPO, "--num-shard", "4", "--port", "8000"],
        True,
        None,
        None,
    ),
    ("TGI", "hf@rev"): (
        ["--model-id", REPO, "--revision", "0e9e39f", "--num-shard", "1", "--port", "8000"],
        ["--model-id", REPO, "--revision", "0e9e39f", "--num-shard", "4", "--port", "8000"],
        True,
        None,
        None,
    ),
    ("TGI", "s3"): (
        ["--model-id", "/models", "--num-shard", "1", "--port", "8000"],
        ["--model-id", "/models", "--num-shard", "4", "--port", "8000"],
        True,
        FETCH_S3,
        FETCHED_VOLUME,
    ),
    ("TGI", "gs"): (
        ["--model-id", "/models", "--num-shard", "1", "--port", "8000"],
        ["--model-id", "/models", "--num-shard", "4", "--port", "8000"],
        True,
        FETCH_GS,
        FETCHED_VOLUME,
    ),
    ("TGI", "pvc"): (
        ["--model-id", "/models/llama-8b", "--num-shard", "1", "--port", "8000"],
        ["--model-id", "/models/llama-8b", "--num-shard", "4", "--port", "8000"],
        False,
        None,
        PVC_VOLUME,
    ),
    # Triton: a model repository, local or in a bucket (which Triton localizes to disk). The GPU
    # count is the model configuration's business (instance_group), not a server flag.
    ("Triton", "s3"): (
        [
            "tritonserver",
            "--model-repository=s3://models-eu/llama-8b",
            "--http-port=8000",
            *TRITON_METRICS,
        ],
        [
            "tritonserver",
            "--model-repository=s3://models-eu/llama-8b",
            "--http-port=8000",
            *TRITON_METRICS,
        ],
        True,
        None,
        None,
    ),
    ("Triton", "gs"): (
        [
            "tritonserver",
            "--model-repository=gs://models-eu/llama-8b",
            "--http-port=8000",
            *TRITON_METRICS,
        ],
        [
            "tritonserver",
            "--model-repository=gs://models-eu/llama-8b",
            "--http-port=8000",
            *TRITON_METRICS,
        ],
        True,
        None,
        None,
    ),
    ("Triton", "pvc"): (
        [
            "tritonserver",
            "--model-repository=/models/llama-8b",
            "--http-port=8000",
            *TRITON_METRICS,
        ],
        [
            "tritonserver",
            "--model-repository=/models/llama-8b",
            "--http-port=8000",
            *TRITON_METRICS,
        ],
        False,
        None,
        PVC_VOLUME,
    ),
    # Custom: only its own arguments; local weights are where the docs say (/models...).
    ("Custom", "hf"): (CUSTOM_ARGS, CUSTOM_ARGS, True, None, None),
    ("Custom", "hf@rev"): (CUSTOM_ARGS, CUSTOM_ARGS, True, None, None),
    ("Custom", "s3"): (CUSTOM_ARGS, CUSTOM_ARGS, True, FETCH_S3, FETCHED_VOLUME),
    ("Custom", "gs"): (CUSTOM_ARGS, CUSTOM_ARGS, True, FETCH_GS, FETCHED_VOLUME),
    ("Custom", "pvc"): (CUSTOM_ARGS, CUSTOM_ARGS, False, None, PVC_VOLUME),
}


def test_the_golden_table_covers_every_engine_and_source_triton_can_read() -> None:
    expected = {(e, s) for e in IMAGES for s in URIS} - {("Triton", "hf"), ("Triton", "hf@rev")}
    assert set(GOLDEN) == expected


# Triton serves /metrics from its own metrics server (`--metrics-port`, default 8002): the port
# is declared, by name, for the endpoint's PodMonitor (tidal.render.monitoring).
METRICS_PORTS: dict[str, list[dict[str, Any]]] = {
    "Triton": [{"name": "metrics", "containerPort": 8002, "protocol": "TCP"}]
}


@pytest.mark.parametrize("gpus", [1, 4])
@pytest.mark.parametrize(("engine", "scheme"), sorted(GOLDEN))
def test_golden_engine_pod(engine: str, scheme: str, gpus: int) -> None:
    args_1, args_4, on_disk, init, model_volume = GOLDEN[(engine, scheme)]
    pod = pod_of(make_ie(engine, gpus, URIS[scheme]))

    requests = {"ephemeral-storage": "30Gi"} if on_disk else {}
    resources: dict[str, Any] = {"limits": {"nvidia.com/gpu": gpus}}
    if requests:
        resources["requests"] = requests
    assert pod["containers"] == [
        {
            "name": "engine",
            "image": IMAGES[engine],
            "args": args_1 if gpus == 1 else args_4,
            "env": ENV,
            "ports": [
                {"name": "http", "containerPort": 8000, "protocol": "TCP"},
                *METRICS_PORTS.get(engine, []),
            ],
            "resources": resources,
            **PROBES[engine],
            "lifecycle": {"preStop": {"sleep": {"seconds": 60}}},
            "securityContext": SECURITY,
            "volumeMounts": BASE_MOUNTS + ([MODEL_MOUNT] if model_volume else []),
        }
    ]
    # /dev/shm: 1 GiB per GPU, at least 2 GiB.
    shm = {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{max(2, gpus)}Gi"}}
    assert pod["volumes"] == [
        {"name": "cache", "emptyDir": {}},
        shm,
        *([model_volume] if model_volume else []),
    ]
    if init is None:
        assert "initContainers" not in pod
    else:
        assert pod["initContainers"] == [init]


@pytest.mark.parametrize("scheme", ["hf", "hf@rev"])
@pytest.mark.parametrize("uri", [True, False])
def test_triton_with_a_hub_repo_is_refused_naming_the_field(scheme: str, uri: bool) -> None:
    ie = make_ie("Triton", 1, URIS[scheme] if uri else None)
    with pytest.raises(PermanentError) as caught:
        pod_of(ie)
    message = str(caught.value)
    assert message.startswith("spec.model.uri must be pvc://, s3:// or gs://")
    # What the admission webhook files it under.
    assert named_problem(message).field == "spec.model.uri"
    with pytest.raises(PermanentError):
        render_deployment(ie, CapacityType.RESERVED, Share(replicas=0, regions=()))


def test_vllm_without_a_uri_serves_the_hub_repo_named_like_the_model() -> None:
    ie = InferenceEndpoint.model_validate(
        {
            "metadata": {"name": "chat", "namespace": "ml", "uid": "u-1"},
            "spec": {"model": {"name": REPO}, "residency": {"regions": ["eu-west-1"]}},
        }
    )
    assert pod_of(ie)["containers"][0]["args"] == [
        REPO,
        "--served-model-name",
        REPO,
        "--port",
        "8000",
    ]


@pytest.mark.parametrize("engine", ["VLLM", "TGI"])
def test_a_name_that_is_no_repo_id_needs_a_uri_for_engines_that_read_the_hub(engine: str) -> None:
    ie = make_ie(engine, 1, None).model_copy(deep=True)
    ie.spec.model.name = "llama 3:latest"
    with pytest.raises(PermanentError, match=r"^spec\.model\.uri is unset, so the weights") as e:
        render_deployment(ie, CapacityType.RESERVED, Share(replicas=0, regions=()))
    assert named_problem(str(e.value)) == Problem("spec.model.uri", str(e.value)[15:])


def test_a_custom_engine_without_a_uri_is_pointed_at_nothing() -> None:
    ie = make_ie("Custom", 1, None).model_copy(deep=True)
    ie.spec.model.name = "my-model:v2"  # not a Hub id, and Tidal does not need one
    container = pod_of(ie)["containers"][0]
    assert container["args"] == CUSTOM_ARGS
    assert container["resources"]["requests"] == {"ephemeral-storage": "30Gi"}


# --- runtime.args: add flags, or replace Tidal's ----------------------------------------------


@pytest.mark.parametrize(
    ("engine", "scheme", "user", "args"),
    [
        # A new flag is appended after Tidal's.
        (
            "VLLM",
            "hf",
            ["--max-model-len", "8192"],
            [REPO, "--served-model-name", NAME, *TP4, "--port", "8000", "--max-model-len", "8192"],
        ),
        # `--flag=value` replaces `--flag value`.
        (
            "VLLM",
            "hf",
            ["--port=9000"],
            [REPO, "--served-model-name", NAME, *TP4, "--port=9000"],
        ),
        # vLLM takes underscores and its short aliases for the same flag.
        (
            "VLLM",
            "hf",
            ["--tensor_parallel_size", "2", "--pipeline-parallel-size", "2"],
            [
                REPO,
                "--served-model-name",
                NAME,
                "--port",
                "8000",
                "--tensor_parallel_size",
                "2",
                "--pipeline-parallel-size",
                "2",
            ],
        ),
        (
            "VLLM",
            "hf",
            ["-tp", "2"],
            [REPO, "--served-model-name", NAME, "--port", "8000", "-tp", "2"],
        ),
        # A user --model replaces the positional model (vLLM moves --model to the front).
        (
            "VLLM",
            "hf",
            ["--model", "/mnt/other"],
            ["--served-model-name", NAME, *TP4, "--port", "8000", "--model", "/mnt/other"],
        ),
        # A pre-quantized FP8 checkpoint (compressed-tensors) names its own method.
        (
            "VLLM",
            "pvc",
            ["--quantization", "compressed-tensors"],
            [
                "/models/llama-8b",
                "--served-model-name",
                NAME,
                *TP4,
                "--port",
                "8000",
                "--quantization",
                "compressed-tensors",
            ],
        ),
        # TGI refuses a repeated flag, so a user one must replace Tidal's, in either form.
        (
            "TGI",
            "hf",
            ["--num-shard=2", "--max-total-tokens", "8192"],
            ["--model-id", REPO, "--port", "8000", "--num-shard=2", "--max-total-tokens", "8192"],
        ),
        (
            "TGI",
            "hf",
            ["-p", "9000"],
            ["--model-id", REPO, "--num-shard", "4", "-p", "9000"],
        ),
        # Triton: the program stays first; `--flag value` replaces `--flag=value`.
        (
            "Triton",
            "pvc",
            ["--http-port", "9000", "--model-control-mode=explicit", "--load-model=llama"],
            [
                "tritonserver",
                "--model-repository=/models/llama-8b",
                *TRITON_METRICS,
                "--http-port",
                "9000",
                "--model-control-mode=explicit",
                "--load-model=llama",
            ],
        ),
        (
            "Triton",
            "s3",
            ["--model-repository=/mnt/repo"],
            ["tritonserver", "--http-port=8000", *TRITON_METRICS, "--model-repository=/mnt/repo"],
        ),
    ],
)
def test_runtime_args_add_flags_and_replace_tidals_of_the_same_name(
    engine: str, scheme: str, user: list[str], args: list[str]
) -> None:
    pod = pod_of(make_ie(engine, 4, URIS[scheme], args=user))
    assert pod["containers"][0]["args"] == args


def test_fp8_quantizes_at_load_and_int8_int4_are_read_from_the_checkpoint() -> None:
    def args(engine: str, quantization: str) -> list[str]:
        ie = make_ie(engine, 1, URIS["hf"]).model_copy(deep=True)
        ie.spec.model.quantization = Quantization(quantization)
        result: list[str] = pod_of(ie)["containers"][0]["args"]
        return result

    assert args("VLLM", "FP8")[-4:] == ["--quantization", "fp8", "--port", "8000"]
    assert args("TGI", "FP8")[-4:] == ["--quantize", "fp8", "--port", "8000"]
    for quantization in ("INT8", "INT4", "None"):
        assert not any("quantiz" in token for token in args("VLLM", quantization))
        assert not any("quantiz" in token for token in args("TGI", quantization))


# --- lifecycle and sizing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timeout", "threshold"), [(60, 12), (61, 13), (1800, 360), (1801, 361), (86400, 17280)]
)
def test_the_startup_probe_covers_the_startup_timeout(timeout: int, threshold: int) -> None:
    assert startup_failure_threshold(timeout) == threshold
    pod = pod_of(make_ie("VLLM", 1, URIS["hf"], startupTimeoutSeconds=timeout))
    probe = pod["containers"][0]["startupProbe"]
    assert probe["failureThreshold"] == threshold
    assert probe["periodSeconds"] == STARTUP_PERIOD_SECONDS


@given(timeout=st.integers(min_value=60, max_value=86400))
def test_the_startup_budget_is_the_least_whole_number_of_periods_covering_the_timeout(
    timeout: int,
) -> None:
    threshold = startup_failure_threshold(timeout)
    assert threshold * STARTUP_PERIOD_SECONDS >= timeout
    assert (threshold - 1) * STARTUP_PERIOD_SECONDS < timeout


@pytest.mark.parametrize(("gpus", "size"), [(1, "2Gi"), (2, "2Gi"), (4, "4Gi"), (8, "8Gi")])
def test_shared_memory_grows_with_tensor_parallelism(gpus: int, size: str) -> None:
    assert shm_size_limit(gpus) == size


@pytest.mark.parametrize(("weights", "storage"), [(1, "12Gi"), (16, "30Gi"), (140, "178Gi")])
def test_ephemeral_storage_is_the_weights_and_headroom(weights: int, storage: str) -> None:
    assert ephemeral_storage_request(weights) == storage


def test_no_ephemeral_storage_request_without_a_weights_size() -> None:
    ie = make_ie("TGI", 1, URIS["hf"]).model_copy(deep=True)
    ie.spec.model.weights_gib = None
    assert "requests" not in pod_of(ie)["containers"][0]["resources"]


def test_cpu_and_memory_keep_the_pod_guaranteed_with_a_fetch_init_container() -> None:
    pod = pod_of(make_ie("TGI", 1, URIS["s3"], cpu="8", memory="64Gi"))
    engine, (init,) = pod["containers"][0], pod["initContainers"]
    assert engine["resources"] == {
        "requests": {"cpu": "8", "memory": "64Gi", "ephemeral-storage": "30Gi"},
        "limits": {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": 1},
    }
    # Every container's requests equal its limits for cpu and memory: Guaranteed QoS.
    assert init["resources"] == {
        "requests": {"cpu": "8", "memory": "64Gi"},
        "limits": {"cpu": "8", "memory": "64Gi"},
    }


def test_secret_credentials_in_runtime_env_reach_the_fetch_and_override_its_settings() -> None:
    env = [
        {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "id"}}},
        {"name": "RCLONE_S3_PROVIDER", "value": "Minio"},
        {"name": "RCLONE_S3_ENDPOINT", "value": "http://minio.storage.svc:9000"},
    ]
    pod = pod_of(make_ie("TGI", 1, URIS["s3"], env=env))
    (init,) = pod["initContainers"]
    assert init["env"] == [
        {"name": "HOME", "value": "/tmp"},
        {"name": "RCLONE_S3_ENV_AUTH", "value": "true"},
        *env,
    ]
    assert pod["containers"][0]["env"] == [*ENV, *env]


def test_the_fetch_container_fills_any_directory_of_any_volume() -> None:
    source = ObjectStoreSource("gs", "models-eu", "")
    container = fetch_weights_container(source, "/cache/llama", volume="shared-cache")
    assert container["args"][:3] == ["copy", ":gcs:models-eu", "/cache/llama"]
    assert container["volumeMounts"] == [{"name": "shared-cache", "mountPath": "/cache/llama"}]
    assert "resources" not in container
    assert re.fullmatch(r"rclone/rclone:\d+\.\d+\.\d+", container["image"])


def test_rendering_twice_shares_no_state() -> None:
    ie = make_ie("TGI", 4, URIS["s3"])
    first = pod_of(ie)
    first["initContainers"][0]["env"].clear()
    first["containers"][0]["env"].clear()
    first["volumes"].clear()
    assert pod_of(ie)["initContainers"] == [FETCH_S3]
    assert pod_of(ie)["containers"][0]["env"] == ENV
