"""The generated CRDs: structural schemas, CEL rules, envelope, and no drift from crds/."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tidal import crdgen

REPO_ROOT = Path(__file__).resolve().parents[2]
CRDS_DIR = REPO_ROOT / "crds"

ALLOWED_KEYS = {
    "type",
    "description",
    "properties",
    "required",
    "items",
    "enum",
    "default",
    "format",
    "pattern",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "anyOf",
    "nullable",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-int-or-string",
    # Maps (labels, nodeSelector, resources) and the open objects of spec.podTemplate.
    "additionalProperties",
    "maxProperties",
    "x-kubernetes-preserve-unknown-fields",
}


def by_kind() -> dict[str, dict[str, Any]]:
    return {crd["spec"]["names"]["kind"]: crd for crd in crdgen.crds()}


def root_schema(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = by_kind()[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its dotted path (list items as `[]`, map values as `{}`)."""
    yield path, schema
    for name, prop in schema.get("properties", {}).items():
        yield from walk(prop, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


def structural_problems(schema: dict[str, Any]) -> list[str]:
    """What would make the API server reject the schema as non-structural (or us dislike it)."""
    problems = []
    for path, node in walk(schema):
        unknown = set(node) - ALLOWED_KEYS
        if unknown:
            problems.append(f"{path}: unexpected keys {sorted(unknown)}")
        if node.get("x-kubernetes-int-or-string"):
            if node.get("anyOf") != [{"type": "integer"}, {"type": "string"}] or "type" in node:
                problems.append(f"{path}: int-or-string must be exactly anyOf[integer, string]")
        elif "anyOf" in node:
            problems.append(f"{path}: anyOf is only allowed for int-or-string")
        elif "type" not in node:
            problems.append(f"{path}: no type")
        if "properties" in node and node.get("type") != "object":
            problems.append(f"{path}: properties on a non-object")
        if node.get("type") == "array" and "items" not in node:
            problems.append(f"{path}: array without items")
        if "default" in node and not conforms(node["default"], node):
            problems.append(f"{path}: default {node['default']!r} does not fit its schema")
        if node.get("nullable"):
            problems.append(f"{path}: nullable (Tidal treats null and absent alike)")
        problems += open_object_problems(path, node)
    return problems


def open_object_problems(path: str, node: dict[str, Any]) -> list[str]:
    """A map's values need a schema (`true` is pydantic's, not a structural one), and only an
    object may be a map or keep unknown fields."""
    problems = []
    if "additionalProperties" in node:
        if not isinstance(node["additionalProperties"], dict) or "properties" in node:
            problems.append(f"{path}: additionalProperties must be a schema, without properties")
        if node.get("type") != "object":
            problems.append(f"{path}: a map that is no object")
    if node.get("x-kubernetes-preserve-unknown-fields") and node.get("type") != "object":
        problems.append(f"{path}: preserve-unknown-fields on a non-object")
    return problems


def conforms(value: Any, schema: dict[str, Any]) -> bool:
    """A small validator: enough to prove the defaults we emit are valid for their schema."""
    kind = schema.get("type")
    if kind == "object":
        return isinstance(value, dict) and all(
            conforms(v, schema.get("properties", {}).get(k, {})) for k, v in value.items()
        )
    if kind == "integer":
        return (
            isinstance(value, int)
            and not isinstance(value, bool)
            and schema.get("minimum", value) <= value <= schema.get("maximum", value)
        )
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "string":
        return (
            isinstance(value, str)
            and value in schema.get("enum", [value])
            and re.search(schema.get("pattern", ""), value) is not None
        )
    if kind == "array":
        return isinstance(value, list)
    return kind is None


@pytest.mark.parametrize("kind", ["InferenceEndpoint", "VectorCollection"])
def test_generated_schema_is_structural(kind: str) -> None:
    assert structural_problems(root_schema(kind)) == []


def test_the_structural_checker_catches_what_pydantic_emits_by_default() -> None:
    raw: dict[str, Any] = {
        "type": "object",
        "title": "X",
        "properties": {
            "a": {"$ref": "#/$defs/A"},
            "b": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
            "c": {"type": "integer", "default": 0, "minimum": 1},
        },
    }
    raw["properties"]["d"] = {"type": "object", "additionalProperties": True}
    problems = structural_problems(raw)
    assert any(".d: additionalProperties must be a schema" in p for p in problems)
    assert any("unexpected keys ['title']" in p for p in problems)
    assert any(".a: no type" in p for p in problems)
    assert any(".b: anyOf" in p for p in problems)
    assert any(".c: default 0" in p for p in problems)


@pytest.mark.parametrize("kind", ["InferenceEndpoint", "VectorCollection"])
def test_every_string_and_list_is_bounded_so_cel_cost_stays_low(kind: str) -> None:
    unbounded = []
    for path, node in walk(root_schema(kind)):
        if not path.startswith((".spec", ".status")):
            continue
        if node.get("type") == "string" and "maxLength" not in node:
            unbounded.append(path)
        if node.get("type") == "array" and "maxItems" not in node:
            unbounded.append(path)
        if "additionalProperties" in node and "maxProperties" not in node:
            unbounded.append(path)
    assert unbounded == []


@pytest.mark.parametrize("kind", ["InferenceEndpoint", "VectorCollection"])
def test_every_property_description_begins_with_its_wire_name(kind: str) -> None:
    wrong = []
    for path, node in walk(root_schema(kind)):
        name = path.rsplit(".", 1)[-1]
        if not path or name.endswith(("[]", "{}")) or name == "metadata":
            continue
        if not node.get("description", "").startswith(name):
            wrong.append(path)
    assert wrong == []


@pytest.mark.parametrize("kind", ["InferenceEndpoint", "VectorCollection"])
def test_status_has_no_defaults_and_spec_keeps_them(kind: str) -> None:
    schema = root_schema(kind)
    status_defaults = [p for p, n in walk(schema["properties"]["status"]) if "default" in n]
    spec_defaults = [p for p, n in walk(schema["properties"]["spec"]) if "default" in n]
    assert status_defaults == []
    assert spec_defaults


@pytest.mark.parametrize(
    ("kind", "path", "default"),
    [
        ("InferenceEndpoint", ".spec.runtime", {}),
        ("InferenceEndpoint", ".spec.runtime.engine", "VLLM"),
        ("InferenceEndpoint", ".spec.runtime.port", 8000),
        ("InferenceEndpoint", ".spec.model.quantization", "None"),
        ("InferenceEndpoint", ".spec.capacity.maxSpotPercent", 100),
        ("InferenceEndpoint", ".spec.capacity.maxNodeGpuUtilizationPercent", 85),
        ("InferenceEndpoint", ".spec.scaling.minReplicas", 1),
        ("InferenceEndpoint", ".spec.scaling.idleSecondsBeforeScaleToZero", 300),
        ("InferenceEndpoint", ".spec.scaling.targetInFlightRequests", 16),
        ("VectorCollection", ".spec.engine.type", "Qdrant"),
        ("VectorCollection", ".spec.metric", "Cosine"),
        ("VectorCollection", ".spec.index.efConstruct", 100),
        ("VectorCollection", ".spec.quantization.rescore", True),
    ],
)
def test_design_defaults_reach_the_crd(kind: str, path: str, default: Any) -> None:
    nodes = dict(walk(root_schema(kind)))
    assert nodes[path]["default"] == default


def test_max_replicas_has_no_wire_default_because_it_depends_on_min_replicas() -> None:
    nodes = dict(walk(root_schema("InferenceEndpoint")))
    assert "default" not in nodes[".spec.scaling.maxReplicas"]


@pytest.mark.parametrize("kind", ["InferenceEndpoint", "VectorCollection"])
def test_conditions_are_a_map_keyed_by_type(kind: str) -> None:
    conditions = root_schema(kind)["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert "type" in conditions["items"]["required"]


def test_quantities_are_int_or_string() -> None:
    nodes = dict(walk(root_schema("InferenceEndpoint")))
    for path in (".spec.runtime.cpu", ".spec.runtime.memory"):
        assert nodes[path]["x-kubernetes-int-or-string"] is True
    assert dict(walk(root_schema("VectorCollection")))[".spec.storage.size"][
        "x-kubernetes-int-or-string"
    ]


def test_regions_are_a_bounded_set() -> None:
    regions = dict(walk(root_schema("InferenceEndpoint")))[".spec.residency.regions"]
    assert regions["x-kubernetes-list-type"] == "set"
    assert regions["minItems"] == 1
    assert regions["maxItems"] == 16
    assert regions["items"]["pattern"]


# --- spec.podTemplate: explainable --------------------------------------------------------------


def test_pod_template_is_a_described_partial_pod_template() -> None:
    # What `kubectl explain inferenceendpoint.spec.podTemplate[.spec]` shows.
    nodes = dict(walk(root_schema("InferenceEndpoint")))
    template = nodes[".spec.podTemplate"]
    assert template["description"].startswith("podTemplate is a partial pod template")
    assert set(template["properties"]) == {"metadata", "spec"}
    assert set(template["properties"]["spec"]["properties"]) == {
        "nodeSelector",
        "tolerations",
        "affinity",
        "volumes",
        "containers",
        "serviceAccountName",
        "imagePullSecrets",
        "priorityClassName",
        "runtimeClassName",
        "securityContext",
    }
    for path in (".spec.podTemplate.metadata", ".spec.podTemplate.spec"):
        for name, field in nodes[path]["properties"].items():
            assert field["description"].startswith(name), (path, name)
            assert len(field["description"]) > len(name) + 20, (path, name)
    assert nodes[".spec.podTemplate.spec.containers[].name"]["enum"] == ["engine"]


def test_only_what_kubernetes_defines_open_ended_is_stored_without_a_schema() -> None:
    open_ended = sorted(
        path
        for path, node in walk(root_schema("InferenceEndpoint"))
        if node.get("x-kubernetes-preserve-unknown-fields")
    )
    assert open_ended == [
        ".spec.podTemplate.spec.affinity.podAffinity",
        ".spec.podTemplate.spec.affinity.podAntiAffinity",
        ".spec.podTemplate.spec.volumes[]",
    ]
    nodes = dict(walk(root_schema("InferenceEndpoint")))
    # A volume still has a typed name, which volumeMounts refer to and the list is keyed by.
    assert nodes[".spec.podTemplate.spec.volumes[].name"]["type"] == "string"
    assert nodes[".spec.podTemplate.spec.volumes"]["x-kubernetes-list-map-keys"] == ["name"]
    for path in open_ended:
        assert "validated" in nodes[path]["description"], path


def test_an_open_object_becomes_preserve_unknown_fields_and_maps_are_made_structural() -> None:
    raw: dict[str, Any] = {
        "type": "object",
        "properties": {
            "open": {"type": "object", "additionalProperties": True, "description": "d"},
            "map": {"type": "object", "additionalProperties": {"$ref": "#/$defs/V"}},
        },
        "$defs": {"V": {"type": "string", "title": "V"}},
    }
    made = crdgen._structural(raw, raw["$defs"], in_status=False)
    assert made["properties"]["open"] == {
        "type": "object",
        "description": "d",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    assert made["properties"]["map"]["additionalProperties"] == {"type": "string"}


def test_a_schema_two_fields_share_is_written_out_in_full_not_as_a_yaml_alias() -> None:
    text = crdgen.to_yaml(crdgen.build_crd(crdgen.KINDS[0]))
    assert "&id" not in text
    assert "*id" not in text


# --- CEL rules ---------------------------------------------------------------------------------


def rules_at(kind: str, path: str) -> list[dict[str, str]]:
    node = dict(walk(root_schema(kind)))[path]
    rules: list[dict[str, str]] = node.get("x-kubernetes-validations", [])
    return rules


@pytest.mark.parametrize(
    ("kind", "path", "rule_fragment", "message_fragment"),
    [
        (
            "InferenceEndpoint",
            ".spec.scaling",
            "self.minReplicas <= self.maxReplicas",
            "scaling.minReplicas",
        ),
        (
            "InferenceEndpoint",
            ".spec",
            "self.capacity.minReservedReplicas <=",
            "capacity.minReservedReplicas",
        ),
        ("InferenceEndpoint", ".spec.runtime", "has(self.image)", "runtime.image"),
        ("InferenceEndpoint", ".spec", "self.runtime.engine != 'Triton'", "model.uri"),
        ("InferenceEndpoint", ".spec.capacity", "self.maxSpotPercent > 0", "maxSpotPercent"),
        ("InferenceEndpoint", ".spec.capacity", "self.minReservedReplicas == 0", "SpotOnly"),
        ("InferenceEndpoint", ".spec.runtime.env[]", "has(self.valueFrom)", "valueFrom"),
        (
            "InferenceEndpoint",
            ".spec.podTemplate.spec.securityContext",
            "self.runAsNonRoot",
            "runAsNonRoot cannot be false",
        ),
        (
            "InferenceEndpoint",
            ".spec.podTemplate.spec.securityContext",
            "self.runAsUser != 0",
            "runAsUser cannot be 0",
        ),
        (
            "InferenceEndpoint",
            ".spec.podTemplate.spec.tolerations[]",
            "self.operator != 'Exists'",
            "operator Exists takes no value",
        ),
        (
            "InferenceEndpoint",
            ".spec.podTemplate.spec.containers[].env[]",
            "has(self.valueFrom)",
            "valueFrom",
        ),
        ("VectorCollection", ".spec.dimension", "self == oldSelf", "create a new VectorCollection"),
        ("VectorCollection", ".spec.metric", "self == oldSelf", "create a new VectorCollection"),
        (
            "VectorCollection",
            ".spec.engine.type",
            "self == oldSelf",
            "create a new VectorCollection",
        ),
        ("VectorCollection", ".spec.engine", "has(self.connectionSecretRef)", "engine.url"),
        ("VectorCollection", ".spec.engine", "!has(self.url)", "engine.url must not be set"),
        ("VectorCollection", ".spec.engine", "!has(self.image)", "engine.image"),
        ("VectorCollection", ".spec", "self.scaling.minReplicas <= self.replicas", "minReplicas"),
        ("VectorCollection", ".spec", "'Product'", "quantization.type"),
        ("VectorCollection", ".spec", "self.shards == 1", "shards"),
    ],
)
def test_each_cross_field_rule_is_in_the_crd(
    kind: str, path: str, rule_fragment: str, message_fragment: str
) -> None:
    matching = [r for r in rules_at(kind, path) if rule_fragment in r["rule"]]
    assert len(matching) == 1
    assert message_fragment in matching[0]["message"]


def all_rules(kind: str) -> Iterator[tuple[str, dict[str, Any], dict[str, str]]]:
    for path, node in walk(root_schema(kind)):
        for rule in node.get("x-kubernetes-validations", []):
            yield path, node, rule


def resolve(node: dict[str, Any], dotted: str) -> bool:
    for part in dotted.split("."):
        node = node.get("properties", {}).get(part, {})
        if not node:
            return False
    return True


@pytest.mark.parametrize("kind", ["InferenceEndpoint", "VectorCollection"])
def test_cel_rules_only_name_fields_that_exist(kind: str) -> None:
    # A typo in a CEL field name compiles on the API server only if the field exists, so catching
    # it here saves an e2e round trip.
    broken = []
    for path, node, rule in all_rules(kind):
        # A field path, without a method called on it (`self.model.uri.startsWith(...)`).
        for ref in re.findall(
            r"\bself\.([A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*)\b(?!\s*\()", rule["rule"]
        ):
            if not resolve(node, ref):
                broken.append(f"{path}: self.{ref}")
        field_path = rule.get("fieldPath")
        if field_path is not None and not resolve(node, field_path.lstrip(".")):
            broken.append(f"{path}: fieldPath {field_path}")
        if rule["rule"].count("(") != rule["rule"].count(")"):
            broken.append(f"{path}: unbalanced parentheses")
    assert broken == []


@pytest.mark.parametrize("kind", ["InferenceEndpoint", "VectorCollection"])
def test_cel_messages_name_the_field(kind: str) -> None:
    rules = list(all_rules(kind))
    assert rules
    for path, _, rule in rules:
        field = path.rsplit(".", 1)[-1].removesuffix("[]")
        mentioned = [*re.findall(r"self\.([A-Za-z]+)", rule["rule"]), field]
        assert any(name in rule["message"] for name in mentioned), rule


# --- The CRD envelope --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "plural", "short_names"),
    [
        ("InferenceEndpoint", "inferenceendpoints", ["ie", "infer"]),
        ("VectorCollection", "vectorcollections", ["vc", "vcol"]),
    ],
)
def test_crd_names_scope_and_version(kind: str, plural: str, short_names: list[str]) -> None:
    crd = by_kind()[kind]
    assert crd["metadata"]["name"] == f"{plural}.tidal.dev"
    spec = crd["spec"]
    assert spec["group"] == "tidal.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["plural"] == plural
    assert spec["names"]["shortNames"] == short_names
    assert spec["names"]["categories"] == ["tidal"]
    [version] = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    assert "scale" not in version["subresources"]


@pytest.mark.parametrize(
    ("kind", "columns"),
    [
        (
            "InferenceEndpoint",
            ["Ready", "Replicas", "Desired", "Spot", "Reserved", "P95(ms)", "$/h", "Age"],
        ),
        ("VectorCollection", ["Ready", "Engine", "Vectors", "Memory", "$/month", "Age"]),
    ],
)
def test_printer_columns(kind: str, columns: list[str]) -> None:
    version = by_kind()[kind]["spec"]["versions"][0]
    default_columns = [
        c["name"] for c in version["additionalPrinterColumns"] if c.get("priority", 0) == 0
    ]
    assert default_columns == columns
    paths = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert paths["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
    assert paths["$/h"] == ".status.cost.hourlyUSD"


@pytest.mark.parametrize("kind", ["InferenceEndpoint", "VectorCollection"])
def test_printer_column_paths_exist_in_the_schema(kind: str) -> None:
    schema = root_schema(kind)
    for column in by_kind()[kind]["spec"]["versions"][0]["additionalPrinterColumns"]:
        path = column["jsonPath"].split("[", 1)[0].lstrip(".")
        if path.startswith("metadata"):
            continue
        assert resolve(schema, path), column


# --- Files, CLI and drift ----------------------------------------------------------------------


def test_crds_folder_matches_the_models() -> None:
    generated = crdgen.generate()
    on_disk = {name: (CRDS_DIR / name).read_text(encoding="utf-8") for name in generated}
    assert on_disk == generated, "crds/ is stale: run `make crds`"


def test_generation_is_deterministic() -> None:
    assert crdgen.generate() == crdgen.generate()


def test_files_carry_the_do_not_edit_header_and_parse_back_to_the_crd() -> None:
    for name, text in crdgen.generate().items():
        assert text.startswith("# generated by `make crds`; do not edit\n")
        crd = yaml.safe_load(text)
        assert crd in crdgen.crds(), name


def test_check_passes_on_fresh_output_and_names_stale_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "crds"
    assert crdgen.main(["--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "tidal.dev_inferenceendpoints.yaml",
        "tidal.dev_vectorcollections.yaml",
    ]
    assert crdgen.main(["--out", str(out), "--check"]) == 0

    stale = out / "tidal.dev_vectorcollections.yaml"
    stale.write_text(stale.read_text(encoding="utf-8") + "# edited\n", encoding="utf-8")
    (out / "tidal.dev_oldkinds.yaml").write_text("{}\n", encoding="utf-8")
    capsys.readouterr()
    assert crdgen.main(["--out", str(out), "--check"]) == 1
    err = capsys.readouterr().err
    assert "tidal.dev_vectorcollections.yaml" in err
    assert "tidal.dev_oldkinds.yaml" in err
    assert "tidal.dev_inferenceendpoints.yaml" not in err


def test_check_reports_missing_files(tmp_path: Path) -> None:
    assert crdgen.main(["--out", str(tmp_path), "--check"]) == 1


def test_without_out_all_crds_go_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert crdgen.main([]) == 0
    documents = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["metadata"]["name"] for d in documents] == [
        "inferenceendpoints.tidal.dev",
        "vectorcollections.tidal.dev",
    ]
