"""Validating admission webhooks, served by the operator itself through Kopf.

Four webhooks, in the ValidatingWebhookConfiguration `validate.tidal.dev` that Kopf creates and
keeps up to date (`settings.admission.managed`):

- `endpoint.validate.tidal.dev`: an InferenceEndpoint's regions against its namespace's
  `tidal.dev/allowed-regions`, its `vectorCollectionRef` (exists, shares a region), GPU
  products against the model's memory need, the whole spec as the API model parses it, and
  its children as the reconcile renders them (a `spec.podTemplate` that overrides what Tidal
  owns is refused naming each field);
- `collection.validate.tidal.dev`: a VectorCollection's regions against the namespace policy;
- `pricing.validate.tidal.dev`: the `tidal-pricing` ConfigMap (labelled
  `app.kubernetes.io/part-of: tidal`) parses as a price table;
- `capacity.validate.tidal.dev`: the `tidal-capacity` ConfigMap (same label) parses as pools a
  cluster-autoscaler can grow (`tidal.placement.provisioning`) and as the cluster's conventions
  (`tidal.api.conventions`).

Failure policy `Ignore` (see docs/reliability.md): when the operator is down the API server
admits the object, and the reconcile enforces residency anyway (the planner never places a
replica outside the allowed regions and reports ResidencyCompliant/Placed=False). A webhook
that cannot read what it needs (namespace, nodes) admits with a warning for the same reason:
an operator outage must never block a cluster's GitOps.

TLS and where the server listens are `tidal.runtime.webhooks` (a self-signed certificate made
at start-up unless one is given). Webhooks are off unless `TIDAL_WEBHOOKS=1`.

Must not: decide (that is `tidal.residency.admission`), or talk to the API other than through
`tidal.clients.kube`. Handlers are sync: reads block, and Kopf runs them in its executor.
"""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Callable
from typing import Any, Final

import kopf

from tidal.api.collection import KIND as COLLECTION_KIND
from tidal.api.collection import PLURAL as COLLECTIONS
from tidal.api.collection import VectorCollection, VectorCollectionSpec
from tidal.api.common import API_VERSION, GROUP, VERSION
from tidal.api.conventions import ConventionsError, parse_conventions
from tidal.api.endpoint import PLURAL as ENDPOINTS
from tidal.api.endpoint import InferenceEndpoint, InferenceEndpointSpec
from tidal.api.labels import LABEL_PART_OF, MANAGER
from tidal.clients import kube
from tidal.cost import CONFIGMAP_NAME, PricingError, catalog_from_configmap
from tidal.errors import PermanentError, TidalError
from tidal.placement.fleet import node_info
from tidal.placement.planner import required_gpu_memory_mib
from tidal.placement.provisioning import CapacityError, declared_pools
from tidal.render.collection import render_service as render_collection_service
from tidal.render.endpoint import CAPACITY_TYPES, Share, render_deployment
from tidal.render.endpoint import render_service as render_endpoint_service
from tidal.render.podtemplate import ROOT as POD_TEMPLATE_FIELD
from tidal.render.podtemplate import PodTemplateError
from tidal.residency.admission import (
    Cluster,
    Problem,
    collection_problems,
    endpoint_problems,
    endpoint_warnings,
    introduced,
    named_problem,
    rejection,
    spec_problems,
)
from tidal.residency.policy import namespace_policy
from tidal.runtime.capacity import CONFIGMAP_NAME as CAPACITY_CONFIGMAP
from tidal.runtime.services import services
from tidal.runtime.webhooks import TidalWebhookServer, WebhookSettings, webhook_settings

__all__ = [
    "CONFIGURATION_NAME",
    "TidalWebhookServer",
    "WebhookSettings",
    "register",
    "validate_capacity",
    "validate_pricing",
    "webhook_settings",
]

CONFIGURATION_NAME: Final = "validate.tidal.dev"
# Only ConfigMaps with this label reach the ConfigMap webhooks (an objectSelector), so the API
# server does not call Tidal for every ConfigMap write in the cluster.
PRICING_LABEL: Final = (LABEL_PART_OF, MANAGER)
# Node facts change slowly; one list per this many seconds keeps a burst of admissions cheap.
NODE_CACHE_SECONDS: Final = 30.0
# The API server answers a denial with this HTTP code (422 Invalid, as for schema errors).
_INVALID: Final = 422


# --- handlers --------------------------------------------------------------------------------


def configure_webhooks(settings: kopf.OperatorSettings, logger: kopf.Logger, **_: Any) -> None:
    """Startup: serve the webhooks and let Kopf manage their configuration."""
    config = webhook_settings()
    if config is None:  # registered only when enabled; the environment cannot change since
        return
    settings.admission.server = TidalWebhookServer(config)
    settings.admission.managed = CONFIGURATION_NAME
    where = (
        f"service={config.service[0]}/{config.service[1]}:{config.service_port}"
        if config.service
        else f"url=https://{config.host}:{config.port}"
    )
    logger.info(
        "Serving admission webhooks configuration=%s listen=%s:%s %s failurePolicy=Ignore",
        CONFIGURATION_NAME,
        config.addr,
        config.port,
        where,
    )


def validate_endpoint(
    body: kopf.Body,
    warnings: list[str],
    logger: kopf.Logger,
    old: kopf.Body | None = None,
    operation: str | None = None,
    **_: Any,
) -> None:
    """Refuse an InferenceEndpoint whose spec, name, regions, collection or GPUs cannot work."""
    problems = _endpoint_problems(body, warnings)
    _decide("InferenceEndpoint", body, problems, _old(old, operation), logger)


def validate_collection(
    body: kopf.Body,
    warnings: list[str],
    logger: kopf.Logger,
    old: kopf.Body | None = None,
    operation: str | None = None,
    **_: Any,
) -> None:
    """Refuse a VectorCollection whose spec, name or regions cannot work in its namespace."""
    problems = _collection_problems(body, warnings)
    _decide(COLLECTION_KIND, body, problems, _old(old, operation), logger)


def _endpoint_problems(body: kopf.Body, warnings: list[str]) -> list[Problem]:
    raw = body.get("spec") or {}
    if problems := spec_problems(InferenceEndpointSpec, raw):
        return problems
    spec = InferenceEndpointSpec.model_validate(raw)
    endpoint = InferenceEndpoint(metadata=dict(body.metadata), spec=spec)
    unrenderable = _unrenderable(lambda: _render_endpoint(endpoint))
    if any(p.depends_on != (POD_TEMPLATE_FIELD,) for p in unrenderable):
        return unrenderable  # an object that cannot even be named is not judged further
    # podTemplate conflicts are judged with the rest: an update may ratchet them away (they
    # predate it) and must still be checked against the namespace policy.
    ref = spec.vector_collection_ref
    cluster = _observe(
        body.metadata.namespace or "",
        collection=ref.name if ref else None,
        nodes=True,
        warnings=warnings,
    )
    if cluster is None:
        return unrenderable
    need = required_gpu_memory_mib(spec)
    warnings.extend(endpoint_warnings(spec, cluster, gpu_need_mib=need))
    return unrenderable + endpoint_problems(spec, cluster, gpu_need_mib=need)


def _collection_problems(body: kopf.Body, warnings: list[str]) -> list[Problem]:
    raw = body.get("spec") or {}
    if problems := spec_problems(VectorCollectionSpec, raw):
        return problems
    spec = VectorCollectionSpec.model_validate(raw)
    collection = VectorCollection(metadata=dict(body.metadata), spec=spec)
    if problems := _unrenderable(lambda: render_collection_service(collection)):
        return problems
    cluster = _observe(
        body.metadata.namespace or "", collection=None, nodes=False, warnings=warnings
    )
    return [] if cluster is None else collection_problems(spec, cluster)


def validate_pricing(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
    """Refuse a `tidal-pricing` ConfigMap the cost module cannot parse, naming the bad key."""
    try:
        catalog_from_configmap(body.get("data") or {})
    except PricingError as exc:
        logger.info("Rejected ConfigMap %s: %s", CONFIGMAP_NAME, exc)
        raise kopf.AdmissionError(str(exc), code=_INVALID) from exc


def validate_capacity(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
    """Refuse a `tidal-capacity` ConfigMap whose pools or conventions do not parse, naming the
    bad field."""
    data = body.get("data") or {}
    try:
        declared_pools(data)
        parse_conventions(data)
    except (CapacityError, ConventionsError) as exc:
        logger.info("Rejected ConfigMap %s: %s", CAPACITY_CONFIGMAP, exc)
        raise kopf.AdmissionError(str(exc), code=_INVALID) from exc


def _render_endpoint(endpoint: InferenceEndpoint) -> None:
    """Render what the reconcile renders for `endpoint`: its Service and, for each capacity
    type, a Deployment in its declared regions under the cluster's conventions (the merge of
    `spec.podTemplate` happens there, and its conflicts depend on both)."""
    render_endpoint_service(endpoint)
    share = Share(
        replicas=0,
        regions=tuple(endpoint.spec.residency.regions),
        conventions=services.capacity.conventions,
    )
    for capacity_type in CAPACITY_TYPES:
        render_deployment(endpoint, capacity_type, share)


def _unrenderable(render: Callable[[], object]) -> list[Problem]:
    """What the reconcile would report as InvalidSpec when it renders the children (a name that
    cannot name a Service, a `spec.podTemplate` that overrides what Tidal owns), refused at
    admission instead.

    A podTemplate conflict is refused only by an update that changes `spec.podTemplate` (or on
    create): one that became a conflict because the cluster's conventions changed must not
    block an unrelated update; the reconcile reports it as InvalidSpec.
    """
    try:
        render()
    except PodTemplateError as exc:
        return [Problem(c.field, c.reason, depends_on=(POD_TEMPLATE_FIELD,)) for c in exc.conflicts]
    except PermanentError as exc:
        return [named_problem(str(exc))]
    return []


def _is_pricing(name: str | None, **_: Any) -> bool:
    return name == CONFIGMAP_NAME


def _is_capacity(name: str | None, **_: Any) -> bool:
    return name == CAPACITY_CONFIGMAP


def _old(old: kopf.Body | None, operation: str | None) -> dict[str, Any] | None:
    # Kopf passes the old object's essence (spec, labels, annotations): enough to compare specs.
    if operation != "UPDATE" or old is None:
        return None
    return dict(old)


def _decide(
    kind: str,
    body: kopf.Body,
    problems: list[Problem],
    old: dict[str, Any] | None,
    logger: kopf.Logger,
) -> None:
    enforced = introduced(problems, old, dict(body))
    if not enforced:
        return
    message = rejection(enforced)
    logger.info("Rejected %s %s/%s: %s", kind, body.metadata.namespace, body.metadata.name, message)
    raise kopf.AdmissionError(message, code=_INVALID)


def _observe(
    namespace: str, *, collection: str | None, nodes: bool, warnings: list[str]
) -> Cluster | None:
    """Read the namespace policy, the referenced collection and the GPU fleet.

    None (admit, with a warning) when the API server cannot answer: the failure policy is
    Ignore, and the reconcile enforces residency anyway.
    """
    try:
        ns = kube.get_object("v1", "Namespace", None, namespace) if namespace else None
        found = (
            kube.get_object(API_VERSION, COLLECTION_KIND, namespace, collection)
            if collection
            else None
        )
        memory, per_node = _NODES.facts() if nodes else ({}, {})
    except TidalError as exc:
        warnings.append(f"not validated at admission ({exc}); the operator enforces it later")
        return None
    policy = namespace_policy(((ns or {}).get("metadata") or {}).get("annotations"))
    if policy.error:
        warnings.append(policy.error)
    collection_regions = None
    if found is not None:
        regions = ((found.get("spec") or {}).get("residency") or {}).get("regions")
        collection_regions = frozenset(str(r) for r in regions or [])
    return Cluster(
        namespace=namespace,
        namespace_regions=policy.regions,
        collection_found=found is not None,
        collection_regions=collection_regions,
        gpu_memory_mib=memory,
        gpus_per_node=per_node,
    )


class _NodeFacts:
    """Per GPU product: its largest memory and the most GPUs one node has, cached briefly."""

    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._lock = threading.Lock()
        self._at = -ttl
        self._facts: tuple[dict[str, int], dict[str, int]] = ({}, {})

    def facts(self) -> tuple[dict[str, int], dict[str, int]]:
        with self._lock:
            if time.monotonic() - self._at < self._ttl:
                return self._facts
            now = datetime.datetime.now(datetime.UTC)
            memory: dict[str, int] = {}
            per_node: dict[str, int] = {}
            for raw in kube.list_objects("v1", "Node", None, {}):
                node = node_info(raw, 0, now, services.capacity.conventions)
                if node.gpu_product is None or node.gpu_allocatable <= 0:
                    continue
                product = node.gpu_product
                per_node[product] = max(per_node.get(product, 0), node.gpu_allocatable)
                if node.gpu_memory_mib is not None:
                    memory[product] = max(memory.get(product, 0), node.gpu_memory_mib)
            self._facts, self._at = (memory, per_node), time.monotonic()
            return self._facts


_NODES = _NodeFacts(NODE_CACHE_SECONDS)


def register(registry: kopf.OperatorRegistry | None = None) -> None:
    """Register the startup hook and the four webhooks (Kopf refuses to start with webhook
    handlers but no server, so this happens only when webhooks are enabled)."""
    kopf.on.startup(registry=registry)(configure_webhooks)
    # CREATE and UPDATE only: deleting is always allowed, and status is a subresource the rules
    # do not match. ignore_failures=True is failurePolicy: Ignore.
    common: dict[str, Any] = {
        "operations": ["CREATE", "UPDATE"],
        "ignore_failures": True,
        "registry": registry,
    }
    kopf.on.validate(GROUP, VERSION, ENDPOINTS, id="endpoint", **common)(validate_endpoint)
    kopf.on.validate(GROUP, VERSION, COLLECTIONS, id="collection", **common)(validate_collection)
    # Only ConfigMaps labelled as Tidal's reach these, and only the one each is named for.
    configmaps: tuple[tuple[str, Callable[..., bool], Callable[..., None]], ...] = (
        ("pricing", _is_pricing, validate_pricing),
        ("capacity", _is_capacity, validate_capacity),
    )
    for webhook, when, handler in configmaps:
        kopf.on.validate(
            "v1",
            "configmaps",
            id=webhook,
            labels={PRICING_LABEL[0]: PRICING_LABEL[1]},
            when=when,
            **common,
        )(handler)


if webhook_settings() is not None:
    register()
