"""Bad input at scale: hundreds of generated invalid or edge-case InferenceEndpoints and
VectorCollections against the real API server, with the admission webhooks on.

Each generated object is sent as a server-side dry run (schema, CEL and the webhooks all run;
nothing is stored) and must be either rejected with a message naming the field that was made
bad, or admitted. A bounded sample of the admitted ones (small enough to schedule) is then
created for real: each must get a Ready condition with a reason at its generation, no replica
may land outside its allowed regions, and the operator must still run with no traceback in its
log. The mutations are derived from the CRD schemas themselves (every bounded field gets its
out-of-range, wrong-type, unknown-enum and oversized values), plus hand-written cross-field
conflicts, forbidden regions and unicode names.

Runs derandomized (reproducible in CI) with `MAX_EXAMPLES` examples; the outcome table is
printed and, with `TIDAL_RELIABILITY_REPORT=<file>`, written as JSON (docs/reliability.md).
"""

from __future__ import annotations

import collections
import copy
import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from tests.e2e.conftest import REPO, Operator, wait_for
from tests.e2e.kube import Kube, condition
from tests.e2e.processes import free_port
from tests.e2e.reliability import (
    OperatorProcess,
    dump,
    session_operator_paused,
    webhook_configuration,
    webhook_env,
)

MAX_EXAMPLES = 600
FIELD = re.compile(r"\b(spec|metadata)\.[A-Za-z]")
MIN_DISTINCT = 500
# Admitted objects created for real (the rest were admitted by the dry run only).
MAX_CREATED = 40
ALLOWED_REGIONS = ("eu-west-1", "us-east-1")  # both regions of the simulated fleet
FORBIDDEN_REGIONS = ("ap-south-1", "us-west-2", "eu-central-1", "me-south-1")
GROUP, VERSION = "tidal.dev", "v1alpha1"
KINDS = {"InferenceEndpoint": "inferenceendpoints", "VectorCollection": "vectorcollections"}
SAMPLES = REPO / "manifests" / "samples"
BASE: dict[str, dict[str, Any]] = {
    "InferenceEndpoint": yaml.safe_load((SAMPLES / "inferenceendpoint-llama.yaml").read_text()),
    "VectorCollection": yaml.safe_load((SAMPLES / "vectorcollection-docs.yaml").read_text()),
}
CRD_FILES = {
    "InferenceEndpoint": REPO / "crds" / "tidal.dev_inferenceendpoints.yaml",
    "VectorCollection": REPO / "crds" / "tidal.dev_vectorcollections.yaml",
}


# --- the fields to break, read from the CRDs --------------------------------------------------


@dataclass(frozen=True)
class Leaf:
    """A scalar field of the spec (a list of scalars counts as its items) and its schema."""

    kind: str
    path: tuple[str, ...]  # wire keys below the object root, e.g. ("spec", "gpu", "count")
    schema: dict[str, Any]
    in_list: bool = False

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


def _leaves(kind: str) -> list[Leaf]:
    crd = yaml.safe_load(CRD_FILES[kind].read_text())
    (version,) = crd["spec"]["versions"]
    found: list[Leaf] = []

    def walk(schema: dict[str, Any], path: tuple[str, ...]) -> None:
        kind_of = schema.get("type")
        if kind_of == "object" and "properties" in schema:
            for key, child in schema["properties"].items():
                walk(child, (*path, key))
        elif kind_of == "array":
            items = schema.get("items") or {}
            if items.get("type") in {"string", "integer"}:
                found.append(Leaf(kind, path, items, in_list=True))
        elif kind_of in {"string", "integer", "boolean"} or schema.get(
            "x-kubernetes-int-or-string"
        ):
            found.append(Leaf(kind, path, schema))

    walk(version["schema"]["openAPIV3Schema"]["properties"]["spec"], ("spec",))
    return found


LEAVES = {kind: _leaves(kind) for kind in KINDS}
OBJECTS = {
    kind: [leaf.path[:2] for leaf in leaves if len(leaf.path) > 2]
    for kind, leaves in LEAVES.items()
}
REQUIRED: dict[str, list[tuple[str, ...]]] = {
    "InferenceEndpoint": [("spec", "model"), ("spec", "model", "name"), ("spec", "residency")],
    "VectorCollection": [("spec", "dimension"), ("spec", "residency")],
}


# --- cases ------------------------------------------------------------------------------------


@dataclass
class Case:
    """One generated object, why it is bad (or edgy), and what the outcome must be."""

    category: str
    kind: str
    obj: dict[str, Any]
    field: str  # the field made bad: a rejection must name it
    expect: str  # "reject" | "either"

    def key(self) -> str:
        return json.dumps([self.kind, self.obj], sort_keys=True)


def _base(kind: str) -> dict[str, Any]:
    obj = copy.deepcopy(BASE[kind])
    obj["metadata"] = {"name": "case"}
    return obj


def _set(obj: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = obj
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[path[-1]] = value


def _delete(obj: dict[str, Any], path: tuple[str, ...]) -> None:
    node = obj
    for key in path[:-1]:
        node = node[key]
    node.pop(path[-1], None)


def _wrong_types(schema: dict[str, Any]) -> list[Any]:
    if schema.get("x-kubernetes-int-or-string"):
        return [True, 1.5, [1], {"v": 1}]
    if schema.get("type") == "integer":
        return ["7", True, 1.5, [1], {"v": 1}, None]
    if schema.get("type") == "boolean":
        return ["true", 1, [True], {"v": True}]
    return [7, True, 1.5, ["x"], {"v": "x"}]


def _malformed(schema: dict[str, Any]) -> list[str]:
    """Strings the field's pattern or minLength refuses."""
    candidates = ["UPPER_case", "-leading", "trailing-", "ünïcödé", "a b", "🚀", "1.2.3", "x"]
    pattern = schema.get("pattern")
    bad = [c for c in candidates if pattern and not re.search(pattern, c)]
    if schema.get("minLength") or (pattern and not re.search(pattern, "")):
        bad.append("")
    return bad


@st.composite
def _schema_case(draw: st.DrawFn, kind: str) -> Case:  # noqa: C901
    leaf = draw(st.sampled_from(LEAVES[kind]))
    schema = leaf.schema
    options = ["wrong_type"]
    if "minimum" in schema or "maximum" in schema:
        options += ["out_of_range", "edge"]
    if "enum" in schema:
        options += ["unknown_enum", "edge"]
    if "maxLength" in schema:
        options.append("huge_string")
    if "pattern" in schema or schema.get("minLength"):
        options.append("bad_format")
    category = draw(st.sampled_from(options))
    obj = _base(kind)
    expect = "reject"
    if category == "wrong_type":
        value = draw(st.sampled_from(_wrong_types(schema)))
        if value is None:  # JSON null: the API server prunes it and applies the default
            expect = "either"
    elif category == "out_of_range":
        low, high = schema.get("minimum"), schema.get("maximum")
        choices = []
        if low is not None:
            choices.append(st.integers(min_value=low - 10**6, max_value=low - 1))
        if high is not None:
            choices.append(st.integers(min_value=high + 1, max_value=high + 2**40))
        value = draw(st.one_of(choices))
    elif category == "unknown_enum":
        known = schema["enum"]
        value = draw(
            st.one_of(
                st.sampled_from([v.lower() for v in known] + [v.upper() for v in known]),
                st.text(min_size=1, max_size=12),
            ).filter(lambda v: v not in known)
        )
    elif category == "huge_string":
        length = draw(st.integers(min_value=schema["maxLength"] + 1, max_value=100_000))
        value = draw(st.sampled_from(["a", "é", "9", "-"])) * length
    elif category == "bad_format":
        value = draw(st.sampled_from(_malformed(schema)))
    else:  # edge: a boundary value the schema allows
        expect = "either"
        if "enum" in schema:
            value = draw(st.sampled_from(schema["enum"]))
        else:
            value = draw(st.sampled_from([schema.get("minimum", 0), schema.get("maximum", 1)]))
    _set(obj, leaf.path, [value] if leaf.in_list else value)
    return Case(category, kind, obj, leaf.dotted, expect)


@st.composite
def _structure_case(draw: st.DrawFn, kind: str) -> Case:
    obj = _base(kind)
    if draw(st.booleans()):
        path = draw(st.sampled_from(REQUIRED[kind]))
        _delete(obj, path)
        return Case("missing_required", kind, obj, ".".join(path), "reject")
    path = draw(st.sampled_from(sorted(set(OBJECTS[kind]))))
    _set(obj, path, draw(st.sampled_from(["x", 3, ["a"], True])))
    return Case("wrong_type", kind, obj, ".".join(path), "reject")


# Cross-field rules (CEL in the CRD): (kind, spec patch, a field the message must name).
CONFLICTS: list[tuple[str, dict[str, Any], str]] = [
    (
        "InferenceEndpoint",
        {"scaling": {"minReplicas": 5, "maxReplicas": 2}},
        "scaling.minReplicas",
    ),
    (
        "InferenceEndpoint",
        {"capacity": {"policy": "SpotOnly", "maxSpotPercent": 0}},
        "maxSpotPercent",
    ),
    (
        "InferenceEndpoint",
        {"capacity": {"policy": "SpotOnly", "minReservedReplicas": 2}},
        "minReservedReplicas",
    ),
    ("InferenceEndpoint", {"runtime": {"engine": "Custom"}}, "runtime.image"),
    # Triton serves a model repository; model.uri defaults to a Hub repo (hf://<model.name>).
    ("InferenceEndpoint", {"runtime": {"engine": "Triton"}}, "model.uri"),
    (
        "InferenceEndpoint",
        {
            "runtime": {
                "env": [{"name": "T", "value": "x", "valueFrom": {"secretKeyRef": {"name": "s"}}}]
            }
        },
        "env",
    ),
    ("InferenceEndpoint", {"residency": {"regions": []}}, "spec.residency.regions"),
    (
        "InferenceEndpoint",
        {"residency": {"regions": ["eu-west-1", "eu-west-1"]}},
        "spec.residency.regions",
    ),
    ("VectorCollection", {"engine": {"mode": "External"}}, "engine.url"),
    ("VectorCollection", {"engine": {"mode": "Managed", "url": "https://q:6333"}}, "engine.url"),
    (
        "VectorCollection",
        {"engine": {"mode": "External", "url": "https://q:6333", "image": "q:1"}},
        "engine.image",
    ),
    (
        "VectorCollection",
        {"engine": {"type": "PGVector"}, "quantization": {"type": "Product"}},
        "quantization.type",
    ),
    ("VectorCollection", {"engine": {"type": "PGVector"}, "shards": 2}, "shards"),
    ("VectorCollection", {"replicas": 1, "scaling": {"minReplicas": 3}}, "scaling.minReplicas"),
]


@st.composite
def _conflict_case(draw: st.DrawFn) -> Case:
    kind, patch, name = draw(st.sampled_from(CONFLICTS))
    obj = _base(kind)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(obj["spec"].get(key), dict):
            obj["spec"][key] = {**obj["spec"][key], **copy.deepcopy(value)}
        else:
            obj["spec"][key] = copy.deepcopy(value)
    return Case("conflicting_limits", kind, obj, name, "reject")


@st.composite
def _region_case(draw: st.DrawFn) -> Case:
    kind = draw(st.sampled_from(sorted(KINDS)))
    obj = _base(kind)
    regions = draw(
        st.lists(
            st.sampled_from(ALLOWED_REGIONS + FORBIDDEN_REGIONS),
            min_size=1,
            max_size=4,
            unique=True,
        )
    )
    obj["spec"]["residency"]["regions"] = regions
    forbidden = set(regions) - set(ALLOWED_REGIONS)
    return Case(
        "forbidden_region" if forbidden else "allowed_region",
        kind,
        obj,
        "spec.residency.regions",
        "reject" if forbidden else "either",
    )


DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def _valid_name(name: str) -> bool:
    return len(name) <= 253 and DNS_SUBDOMAIN.fullmatch(name) is not None


DNS_LABEL = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,40}[a-z0-9])?\Z")


@st.composite
def _name_case(draw: st.DrawFn) -> Case:
    kind = draw(st.sampled_from(sorted(KINDS)))
    obj = _base(kind)
    if draw(st.booleans()):
        name = draw(st.text(min_size=1, max_size=300).filter(lambda s: not _valid_name(s)))
        obj["metadata"]["name"] = name
        return Case("unicode_name", kind, obj, "metadata.name", "reject")
    obj["metadata"]["name"] = draw(DNS_LABEL)
    text = draw(st.text(min_size=1, max_size=60))
    obj["spec"]["residency"]["dataClassification"] = text
    if kind == "InferenceEndpoint":
        obj["spec"]["model"]["name"] = draw(st.text(min_size=1, max_size=200))
    return Case("unicode_text", kind, obj, "spec", "either")


# Weighted: the schema-derived mutations cover the most ground, so they come up most often.
BUILDERS = [
    *[st.sampled_from(sorted(KINDS)).flatmap(_schema_case)] * 6,
    st.sampled_from(sorted(KINDS)).flatmap(_structure_case),
    _conflict_case(),
    _region_case(),
    _name_case(),
]
CASES = st.sampled_from(range(len(BUILDERS))).flatmap(lambda i: BUILDERS[i])


# --- the run ----------------------------------------------------------------------------------


@dataclass
class Tally:
    tried: int = 0
    distinct: set[str] = field(default_factory=set)
    outcomes: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    admitted: list[Case] = field(default_factory=list)
    created: dict[str, str] = field(default_factory=dict)  # "<kind>/<name>" -> Ready reason
    notes: dict[str, str] = field(default_factory=dict)  # what each not-Ready object said


TALLY = Tally()


@dataclass
class Env:
    api: k8s.CustomObjectsApi
    namespace: str
    operator: OperatorProcess


@pytest.fixture(scope="module")
def env(
    kube: Kube, crds: None, operator: Operator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Env]:
    port = free_port()
    log = tmp_path_factory.mktemp("bad-input") / "operator.log"
    namespace = f"bad-{uuid.uuid4().hex[:8]}"
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": namespace,
                "annotations": {"tidal.dev/allowed-regions": ",".join(ALLOWED_REGIONS)},
            },
        }
    )
    api_client = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(kube.kubeconfig)
    )
    api = k8s.CustomObjectsApi(api_client)
    with session_operator_paused(operator):
        served = OperatorProcess(
            kube, log, {**webhook_env(port), "TIDAL_RECONCILE_INTERVAL_SECONDS": "10"}
        )
        served.start()
        try:
            wait_for(
                "the webhooks",
                lambda: len((webhook_configuration(kube) or {}).get("webhooks") or []) == 4,
                timeout=90,
            )
            probe = _base("InferenceEndpoint")
            probe["spec"]["residency"]["regions"] = ["ap-south-1"]
            wait_for(
                "the API server to call the webhook",
                lambda: _send(api, namespace, "InferenceEndpoint", probe, dry_run=True)[0] == 422,
                timeout=60,
            )
            yield Env(api, namespace, served)
        finally:
            served.stop()
            kube.run("delete", "namespace", namespace, "--wait=false", check=False)
            api_client.close()


def _send(
    api: k8s.CustomObjectsApi, namespace: str, kind: str, obj: dict[str, Any], *, dry_run: bool
) -> tuple[int, str]:
    """(HTTP status, message) of a create; 201 with an empty message when admitted."""
    try:
        api.create_namespaced_custom_object(
            GROUP, VERSION, namespace, KINDS[kind], obj, dry_run="All" if dry_run else None
        )
    except ApiException as exc:
        try:
            message = json.loads(exc.body or "{}").get("message", "")
        except ValueError:
            message = str(exc.body)
        return int(exc.status or 0), str(message)
    return 201, ""


@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=list(HealthCheck),
)
@given(case=CASES)
def test_every_bad_object_is_rejected_naming_its_field(env: Env, case: Case) -> None:
    case.obj["apiVersion"] = f"{GROUP}/{VERSION}"
    case.obj["kind"] = case.kind
    TALLY.tried += 1
    TALLY.distinct.add(case.key())
    status, message = _send(env.api, env.namespace, case.kind, case.obj, dry_run=True)
    shown = f"{case.category} {case.field}: HTTP {status} {message[:300]!r}"
    if status == 201:
        TALLY.outcomes[(case.category, "admitted")] += 1
        assert case.expect == "either", f"admitted although invalid: {shown}"
        TALLY.admitted.append(case)
        return
    by = "webhook" if "admission webhook" in message else "schema/CEL"
    TALLY.outcomes[(case.category, f"rejected by {by}")] += 1
    assert status in (400, 422), shown
    if case.expect == "reject":
        assert case.field in message, f"the message does not name {case.field}: {shown}"
    else:  # an edge value may trip another field's rule; that field must then be named
        assert FIELD.search(message), f"the message names no field: {shown}"
    if by == "webhook":  # ours: bounded, whatever the input (the API server echoes values)
        assert len(message) < 2048, f"an oversized message ({len(message)} chars): {shown}"


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _small(case: Case) -> bool:
    """Admitted objects small enough to run for real on the simulated fleet."""
    spec = case.obj["spec"]
    if case.kind == "InferenceEndpoint":
        scaling = spec.get("scaling") or {}
        capacity = spec.get("capacity") or {}
        return (
            _int(scaling.get("minReplicas"), 1) <= 2
            and _int(capacity.get("minReservedReplicas"), 0) <= 2
        )
    return _int(spec.get("replicas"), 1) <= 2 and _int(spec.get("shards"), 1) <= 2


def test_admitted_objects_are_reported_by_a_clear_condition(  # noqa: C901
    kube: Kube, env: Env
) -> None:
    assert TALLY.tried, "run the generating test first (same module)"
    chosen: list[tuple[str, str]] = []
    labels: dict[tuple[str, str], str] = {}
    seen_names: set[tuple[str, str]] = set()
    by_category: dict[str, list[Case]] = collections.defaultdict(list)
    for case in TALLY.admitted:
        if _small(case):
            by_category[case.category].append(case)
    # Round-robin over categories so every kind of edge case is represented.
    queues = [collections.deque(cases) for _, cases in sorted(by_category.items())]
    while queues and len(chosen) < MAX_CREATED:
        for queue in list(queues):
            if not queue:
                queues.remove(queue)
                continue
            case = queue.popleft()
            name = case.obj["metadata"]["name"]
            if name == "case" or (case.kind, name) in seen_names:
                name = f"{case.kind[:2].lower()}-{len(chosen)}"
            case.obj["metadata"]["name"] = name
            seen_names.add((case.kind, name))
            status, message = _send(env.api, env.namespace, case.kind, case.obj, dry_run=False)
            assert status == 201, (
                f"{case.category}: admitted by the dry run, refused now: {message}"
            )
            chosen.append((case.kind, name))
            labels[(case.kind, name)] = f"{case.category} {case.field}"
            if len(chosen) >= MAX_CREATED:
                break
    assert chosen, "no admitted object was small enough to create"

    def reported() -> bool:
        missing = []
        for kind, name in chosen:
            obj = kube.get(KINDS[kind], name, env.namespace)
            ready = condition(obj, "Ready")
            generation = (obj or {}).get("metadata", {}).get("generation")
            if (
                obj is None
                or ready is None
                or not ready.get("reason")
                or ready.get("observedGeneration") != generation
            ):
                missing.append(f"{kind}/{name}")
                continue
            TALLY.created[f"{kind}/{name}"] = f"Ready={ready['status']} {ready['reason']}"
            if ready["status"] != "True":
                why = f"{labels[(kind, name)]}: {ready['reason']}: {ready.get('message', '')}"
                TALLY.notes[f"{kind}/{name}"] = why[:300]
        return not missing

    try:
        wait_for(
            "a Ready condition on every admitted object",
            reported,
            timeout=180,
            interval=3,
        )
    except BaseException:
        print(dump(kube, env.namespace, env.operator))
        raise
    _assert_in_allowed_regions(kube, env.namespace)
    assert env.operator.alive(), env.operator.tail()
    assert env.operator.tracebacks() == []


def _assert_in_allowed_regions(kube: Kube, namespace: str) -> None:
    nodes = kube.nodes()
    for pod in kube.list("pods", namespace):
        node = pod["spec"].get("nodeName")
        if node:
            region = nodes[node]["metadata"]["labels"].get("topology.kubernetes.io/region")
            assert region in ALLOWED_REGIONS, f"{pod['metadata']['name']} runs in {region}"


def test_enough_distinct_objects_were_tried_and_the_table_is_recorded(env: Env) -> None:
    distinct = len(TALLY.distinct)
    table: collections.defaultdict[str, collections.Counter[str]] = collections.defaultdict(
        collections.Counter
    )
    for (category, outcome), count in TALLY.outcomes.items():
        table[category][outcome] += count
    report = {
        "tried": TALLY.tried,
        "distinct": distinct,
        "created_for_real": len(TALLY.created),
        "ready_reasons": dict(collections.Counter(TALLY.created.values())),
        "not_ready": dict(sorted(TALLY.notes.items())),
        "outcomes": {category: dict(counts) for category, counts in sorted(table.items())},
        "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    text = json.dumps(report, indent=2, sort_keys=True)
    print(text)
    if target := os.environ.get("TIDAL_RELIABILITY_REPORT"):
        Path(target).write_text(text + "\n")
    assert distinct >= MIN_DISTINCT, f"only {distinct} distinct objects tried"
    assert env.operator.alive()
