"""The webhook wiring (tidal.controllers.admission, tidal.runtime.webhooks): environment,
registration, certificate, the ConfigMap webhooks, which need nothing but the object under
review, and the endpoint webhook's render check (a `spec.podTemplate` conflict)."""

from __future__ import annotations

import ipaddress
import logging
import ssl
from pathlib import Path
from typing import Any, cast

import kopf
import pytest
import yaml
from cryptography import x509

from tidal.api.endpoint import InferenceEndpoint
from tidal.controllers.admission import (
    CONFIGURATION_NAME,
    _render_endpoint,
    _unrenderable,
    register,
    validate_capacity,
    validate_endpoint,
    validate_pricing,
)
from tidal.residency.admission import Problem, introduced, rejection
from tidal.runtime.webhooks import TidalWebhookServer, WebhookSettings, webhook_settings

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"


# --- environment -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["", "0", "false", "no"])
def test_webhooks_are_off_unless_enabled(value: str) -> None:
    assert webhook_settings({"TIDAL_WEBHOOKS": value, "TIDAL_WEBHOOK_HOST": "127.0.0.1"}) is None


def test_url_mode_listens_where_the_api_server_calls() -> None:
    config = webhook_settings(
        {"TIDAL_WEBHOOKS": "1", "TIDAL_WEBHOOK_HOST": "127.0.0.1", "TIDAL_WEBHOOK_PORT": "18443"}
    )
    assert config == WebhookSettings(addr="127.0.0.1", port=18443, host="127.0.0.1")


def test_service_mode_listens_on_every_interface() -> None:
    config = webhook_settings(
        {"TIDAL_WEBHOOKS": "true", "TIDAL_WEBHOOK_SERVICE": "tidal-system/tidal-webhook"}
    )
    assert config is not None
    assert config.service == ("tidal-system", "tidal-webhook")
    assert (config.addr, config.port, config.service_port) == ("0.0.0.0", 9443, 443)


@pytest.mark.parametrize(
    ("env", "complaint"),
    [
        ({}, "TIDAL_WEBHOOK_HOST or TIDAL_WEBHOOK_SERVICE"),
        ({"TIDAL_WEBHOOK_SERVICE": "tidal-webhook"}, "<namespace>/<name>"),
        ({"TIDAL_WEBHOOK_HOST": "h", "TIDAL_WEBHOOK_PORT": "https"}, "TIDAL_WEBHOOK_PORT"),
        ({"TIDAL_WEBHOOK_HOST": "h", "TIDAL_WEBHOOK_PORT": "70000"}, "TIDAL_WEBHOOK_PORT"),
        ({"TIDAL_WEBHOOK_HOST": "h", "TIDAL_WEBHOOK_CERTFILE": "/c"}, "go together"),
    ],
)
def test_a_configuration_that_cannot_work_fails_at_start(
    env: dict[str, str], complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint):
        webhook_settings({"TIDAL_WEBHOOKS": "1", **env})


# --- registration ----------------------------------------------------------------------------


def _webhooks() -> dict[str, Any]:
    registry = kopf.OperatorRegistry()
    register(registry)
    return {str(h.id): h for h in registry._webhooks.get_all_handlers()}


def test_four_webhooks_are_registered_with_failure_policy_ignore() -> None:
    handlers = _webhooks()
    assert set(handlers) == {"endpoint", "collection", "pricing", "capacity"}
    for handler in handlers.values():
        assert handler.ignore_failures is True
        assert set(handler.operations or ()) == {"CREATE", "UPDATE"}
        assert not handler.side_effects  # sideEffects: None, so dry-run requests are reviewed


@pytest.mark.parametrize("webhook", ["pricing", "capacity"])
def test_only_labelled_configmaps_reach_the_configmap_webhooks(webhook: str) -> None:
    assert _webhooks()[webhook].labels == {"app.kubernetes.io/part-of": "tidal"}


def test_the_shipped_pricing_configmap_carries_that_label() -> None:
    # kustomize adds app.kubernetes.io/part-of to every object of the base.
    base = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    (labels,) = base["labels"]
    assert labels["pairs"]["app.kubernetes.io/part-of"] == "tidal"
    assert "pricing-configmap.yaml" in base["resources"]


def test_the_configuration_is_named_for_tidal() -> None:
    assert CONFIGURATION_NAME == "validate.tidal.dev"


# --- certificate -----------------------------------------------------------------------------


def test_the_certificate_names_every_host_and_address_but_not_the_wildcard(
    tmp_path: Path,
) -> None:
    cert_pem, key_pem = TidalWebhookServer.build_certificate(
        ["tidal-webhook.tidal-system.svc", "0.0.0.0", "127.0.0.1", "tidal-webhook"]
    )
    cert = x509.load_pem_x509_certificate(cert_pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [
        "tidal-webhook.tidal-system.svc",
        "tidal-webhook",
    ]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    # The pair loads as a server certificate (what Kopf does with it).
    (tmp_path / "c.pem").write_bytes(cert_pem)
    (tmp_path / "k.pem").write_bytes(key_pem)
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
        tmp_path / "c.pem", tmp_path / "k.pem"
    )


def test_the_certificate_verifies_against_itself_as_the_ca_bundle(tmp_path: Path) -> None:
    cert_pem, _ = TidalWebhookServer.build_certificate(["127.0.0.1"])
    (tmp_path / "ca.pem").write_bytes(cert_pem)
    context = ssl.create_default_context(cafile=tmp_path / "ca.pem")
    assert context.cert_store_stats()["x509_ca"] == 1


def test_a_password_encrypts_the_key() -> None:
    _, key_pem = TidalWebhookServer.build_certificate(["127.0.0.1"], "s3cret")
    assert b"ENCRYPTED" in key_pem


def test_service_mode_certificate_covers_the_service_dns_names() -> None:
    server = TidalWebhookServer(
        WebhookSettings(addr="0.0.0.0", port=9443, service=("tidal-system", "tidal-webhook"))
    )
    assert server.host == "tidal-webhook.tidal-system.svc"
    assert set(server.extra_sans) == {
        "tidal-webhook",
        "tidal-webhook.tidal-system",
        "tidal-webhook.tidal-system.svc.cluster.local",
    }


# --- the pricing webhook ---------------------------------------------------------------------


def _configmap(data: dict[str, str]) -> kopf.Body:
    raw = {"metadata": {"name": "tidal-pricing"}, "data": data}
    return kopf.Body(cast(kopf.RawBody, raw))  # a ConfigMap: `data` is no field of Kopf's RawBody


def test_the_shipped_price_table_is_admitted() -> None:
    shipped = yaml.safe_load((MANIFESTS / "pricing-configmap.yaml").read_text())
    validate_pricing(body=_configmap(shipped["data"]), logger=_logger())


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("gpuHourlyUSD: {}\n", "gpuHourlyUSD"),
        ("cpuCoreHourlyUSD: 0.03\n", "cpuCoreHourlyUSD"),
        ("[not, a, mapping]\n", "must be a mapping"),
        ("{unclosed\n", "not valid YAML"),
    ],
)
def test_a_broken_price_table_is_refused_naming_the_key(text: str, field: str) -> None:
    with pytest.raises(kopf.AdmissionError, match=field) as caught:
        validate_pricing(body=_configmap({"pricing.yaml": text}), logger=_logger())
    assert caught.value.code == 422


def test_a_configmap_without_the_key_is_refused() -> None:
    with pytest.raises(kopf.AdmissionError, match=r"no key pricing\.yaml"):
        validate_pricing(body=_configmap({"other": "x"}), logger=_logger())


def _logger() -> logging.Logger:
    return logging.getLogger("test")


# --- the capacity webhook --------------------------------------------------------------------


def test_a_capacity_configmap_that_does_not_parse_is_refused_naming_the_field() -> None:
    good = "pools:\n- {name: a, capacityType: spot, regions: [eu-west-1], gpusPerNode: 8,\n"
    good += "   maxNodes: 2, nodeLabels: {pool: a}}\n"
    body = kopf.Body(cast(kopf.RawBody, {"metadata": {"name": "tidal-capacity"}, "data": {}}))
    validate_capacity(body=body, logger=_logger())
    ok = {"metadata": {"name": "tidal-capacity"}, "data": {"capacity.yaml": good}}
    validate_capacity(body=kopf.Body(cast(kopf.RawBody, ok)), logger=_logger())
    bad = {"metadata": {"name": "tidal-capacity"}, "data": {"capacity.yaml": "pools: [{name: a}]"}}
    with pytest.raises(kopf.AdmissionError, match=r"pools\.0\.capacityType"):
        validate_capacity(body=kopf.Body(cast(kopf.RawBody, bad)), logger=_logger())
    conventions = {
        "metadata": {"name": "tidal-capacity"},
        "data": {"capacity.yaml": good, "conventions.yaml": "spotMarkers: [{key: '!'}]"},
    }
    with pytest.raises(kopf.AdmissionError, match=r"conventions.yaml: spotMarkers\.0\.key"):
        validate_capacity(body=kopf.Body(cast(kopf.RawBody, conventions)), logger=_logger())


# --- the endpoint webhook: what the reconcile could not render ---------------------------------


def _endpoint(pod_template: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"model": {"name": "m"}, "residency": {"regions": ["eu-west-1"]}}
    if pod_template is not None:
        spec["podTemplate"] = pod_template
    meta = {"name": "chat", "namespace": "ml", "uid": "u-1"}
    return {
        "apiVersion": "tidal.dev/v1alpha1",
        "kind": "InferenceEndpoint",
        "metadata": meta,
        "spec": spec,
    }


def _render_problems(obj: dict[str, Any]) -> list[Problem]:
    ie = InferenceEndpoint.model_validate(obj)
    return _unrenderable(lambda: _render_endpoint(ie))


def test_a_pod_template_conflict_is_one_problem_per_field_at_its_path() -> None:
    obj = _endpoint(
        {
            "metadata": {"labels": {"tidal.dev/endpoint": "other"}},
            "spec": {"nodeSelector": {"karpenter.sh/capacity-type": "on-demand"}},
        }
    )
    problems = _render_problems(obj)
    assert [str(p) for p in problems] == [
        'spec.podTemplate.metadata.labels["tidal.dev/endpoint"]: Tidal owns this label: it '
        "selects the endpoint's pods",
        'spec.podTemplate.spec.nodeSelector["karpenter.sh/capacity-type"]: Tidal owns the '
        "capacity type (spec.capacity)",
    ]
    assert rejection(problems).startswith('spec.podTemplate.metadata.labels["tidal.dev/endpoint"]')
    # Refused on create, and by an update that touches spec.podTemplate; an update that leaves
    # it alone (Kopf's own annotations, a scaling change) is not refused for it.
    assert introduced(problems, None, obj) == problems
    changed = _endpoint({"spec": {"nodeSelector": {"karpenter.sh/capacity-type": "spot"}}})
    assert introduced(problems, changed, obj) == problems
    scaled = {**obj, "spec": {**obj["spec"], "scaling": {"minReplicas": 3}}}
    assert introduced(problems, obj, scaled) == []


def test_a_pod_template_tidal_can_merge_is_no_problem() -> None:
    obj = _endpoint({"spec": {"tolerations": [{"key": "sku", "operator": "Exists"}]}})
    assert _render_problems(obj) == []


# --- the endpoint webhook: what the renderer cannot render -----------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        # Triton reads a model repository; without model.uri the weights would be hf://<name>.
        (
            {"model": {"name": "llama"}, "runtime": {"engine": "Triton"}},
            r"^spec\.model\.uri: must be pvc://, s3:// or gs:// when runtime\.engine is Triton",
        ),
        # vLLM would load hf://<model.name>, which is no Hub repo id.
        (
            {"model": {"name": "llama 3:latest"}},
            r"^spec\.model\.uri: is unset, so the weights would come from hf://llama 3:latest",
        ),
    ],
)
def test_an_endpoint_its_engine_cannot_serve_is_refused_before_any_cluster_read(
    spec: dict[str, Any], message: str
) -> None:
    raw = {
        "apiVersion": "tidal.dev/v1alpha1",
        "kind": "InferenceEndpoint",
        # The API server sets the uid before calling admission; ownerReferences need it.
        "metadata": {"name": "chat", "namespace": "ml", "uid": "u-1"},
        "spec": {**spec, "residency": {"regions": ["eu-west-1"]}},
    }
    with pytest.raises(kopf.AdmissionError, match=message) as caught:
        validate_endpoint(
            body=kopf.Body(cast(kopf.RawBody, raw)),
            warnings=[],
            logger=_logger(),
            operation="CREATE",
        )
    assert caught.value.code == 422
