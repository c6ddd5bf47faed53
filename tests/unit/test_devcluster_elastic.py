"""The elastic dev fleet's pure parts: Karpenter's instance-types file priced from the catalog,
the NodePools, the KWOK configuration with the simulated replica start-up time, the fleet file
itself, the `tidal dev` commands' parsing, and the helper bookkeeping (local processes only)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from tidal.api.labels import (
    GPU_RESOURCE,
    KARPENTER_CAPACITY_TYPE,
    KARPENTER_GPU_COUNT,
    KARPENTER_GPU_MANUFACTURER,
    KARPENTER_GPU_MEMORY_MIB,
    KARPENTER_GPU_NAME,
    NODE_REGION,
    NODE_ZONE,
    SIMULATED_STARTUP,
    SIMULATED_WEIGHTS_BYTES,
    SPOT_MARKERS,
    CapacityType,
)
from tidal.cli import _parser, main
from tidal.cost.catalog import PriceCatalog
from tidal.cost.defaults import DEFAULT_CATALOG, DEFAULT_PRICING
from tidal.devcluster import cluster, fleet

ELASTIC = fleet.load_elastic(fleet.ELASTIC_FLEET)


def _types(unavailable: dict[str, list[str]] | None = None) -> dict[str, dict[str, Any]]:
    rendered = fleet.render_instance_types(ELASTIC, DEFAULT_CATALOG, unavailable)
    return {t["name"]: t for t in rendered}


def _labels(offering: dict[str, Any]) -> dict[str, str]:
    labels = {}
    for req in offering["Requirements"]:
        assert req["operator"] == "In", req
        assert len(req["values"]) == 1, req
        labels[req["key"]] = req["values"][0]
    return labels


# --- The elastic fleet file -----------------------------------------------------------------


def test_the_elastic_fleet_starts_with_cpu_nodes_only() -> None:
    nodes = fleet.render_nodes(ELASTIC)

    assert {n["metadata"]["labels"][NODE_REGION] for n in nodes} == {"eu-west-1", "us-east-1"}
    assert all(GPU_RESOURCE not in n["status"]["allocatable"] for n in nodes)


def test_the_elastic_fleet_offers_h100_a100_and_l4_in_two_regions_of_two_zones() -> None:
    gpus = {t.gpu.name: t for t in ELASTIC.karpenter.instance_types}

    assert {name: t.name for name, t in gpus.items()} == {
        "h100": "p5.48xlarge",
        "a100": "p4de.24xlarge",
        "l4": "g6.xlarge",
    }
    assert (gpus["h100"].gpu.count, gpus["a100"].gpu.count, gpus["l4"].gpu.count) == (8, 8, 1)
    assert ELASTIC.karpenter.zones == {
        "eu-west-1": ["eu-west-1a", "eu-west-1b"],
        "us-east-1": ["us-east-1a", "us-east-1b"],
    }
    assert ELASTIC.startup_seconds == 30
    assert ELASTIC.karpenter.consolidate_after == "30s"


def test_gpu_memory_agrees_with_the_static_fleet_where_both_have_the_gpu() -> None:
    static = {
        g.gpu.product: g.gpu.memory_mib
        for g in fleet.load(fleet.DEFAULT_FLEET).node_groups
        if g.gpu is not None
    }
    elastic = {t.gpu.product: t.gpu.memory_mib for t in ELASTIC.karpenter.instance_types}

    shared = static.keys() & elastic.keys()
    assert shared, "the two fleets share no GPU: the check below would pass on nothing"
    assert {p: elastic[p] for p in shared} == {p: static[p] for p in shared}


def test_a_fleet_file_is_elastic_when_it_has_a_karpenter_section() -> None:
    assert type(fleet.load_any(fleet.DEFAULT_FLEET)) is fleet.Fleet
    assert type(fleet.load_any(fleet.ELASTIC_FLEET)) is fleet.ElasticFleet
    assert fleet.load_any(fleet.DEFAULT_FLEET).startup_seconds == 0
    assert fleet.resolve("elastic") == fleet.ELASTIC_FLEET
    assert fleet.resolve("static") == fleet.DEFAULT_FLEET
    assert fleet.resolve("my/fleet.yaml") == Path("my/fleet.yaml")


def test_a_bad_consolidate_after_is_refused(tmp_path: Path) -> None:
    raw = yaml.safe_load(fleet.ELASTIC_FLEET.read_text())
    raw["karpenter"]["consolidateAfter"] = "5 seconds"
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(raw))

    with pytest.raises(ValueError, match="consolidateAfter"):
        fleet.load_any(path)


@pytest.mark.parametrize(
    ("product", "names"),
    [
        (None, ["p5.48xlarge", "p4de.24xlarge", "g6.xlarge"]),
        ("l4", ["g6.xlarge"]),
        ("L4", ["g6.xlarge"]),
        ("NVIDIA-H100-80GB-HBM3", ["p5.48xlarge"]),
        ("p4de.24xlarge", ["p4de.24xlarge"]),
    ],
)
def test_a_product_names_instance_types_by_gpu_product_or_type(
    product: str | None, names: list[str]
) -> None:
    assert ELASTIC.instance_type_names(product) == names


def test_an_unknown_product_or_region_is_refused_naming_what_exists() -> None:
    with pytest.raises(fleet.FleetError, match=r"h100 \(p5\.48xlarge\)"):
        ELASTIC.instance_type_names("v100")
    with pytest.raises(fleet.FleetError, match="eu-west-1, us-east-1"):
        ELASTIC.check_region("ap-south-1")


# --- Karpenter's instance-types file --------------------------------------------------------


@pytest.mark.parametrize("region", ["eu-west-1", "us-east-1"])
@pytest.mark.parametrize(
    ("capacity", "catalog_capacity"),
    [("spot", CapacityType.SPOT), ("on-demand", CapacityType.RESERVED)],
)
def test_offerings_cost_the_gpus_times_the_catalog_price(
    region: str, capacity: str, catalog_capacity: CapacityType
) -> None:
    for itype in ELASTIC.karpenter.instance_types:
        per_gpu = DEFAULT_CATALOG.gpu_price(itype.gpu.product, catalog_capacity, region)
        assert per_gpu is not None
        offerings = [
            o
            for o in _types()[itype.name]["offerings"]
            if _labels(o)[NODE_REGION] == region and _labels(o)[KARPENTER_CAPACITY_TYPE] == capacity
        ]

        assert len(offerings) == 2, "one offering per zone"
        assert {Decimal(str(o["Price"])) for o in offerings} == {per_gpu * itype.gpu.count}


def test_the_h100_spot_price_in_eu_west_1_is_eight_catalog_gpus() -> None:
    offering = next(
        o
        for o in _types()["p5.48xlarge"]["offerings"]
        if _labels(o)[KARPENTER_CAPACITY_TYPE] == "spot" and _labels(o)[NODE_ZONE] == "eu-west-1b"
    )

    assert offering["Price"] == pytest.approx(8 * 3.79)


def test_every_offering_carries_the_labels_karpenter_puts_on_the_node() -> None:
    l4 = _types()["g6.xlarge"]

    assert l4["resources"] == {
        "cpu": "4",
        "memory": "16Gi",
        "ephemeral-storage": "2Ti",
        "pods": "110",
        GPU_RESOURCE: "1",
    }
    assert (l4["architecture"], l4["operatingSystems"]) == ("amd64", ["linux"])
    zones = set()
    for offering in l4["offerings"]:
        labels = _labels(offering)
        zones.add((labels[NODE_REGION], labels[NODE_ZONE]))
        assert labels[NODE_ZONE].startswith(labels[NODE_REGION])
        assert {k: labels[k] for k in labels if k.startswith("karpenter.k8s.aws/")} == {
            KARPENTER_GPU_NAME: "l4",
            KARPENTER_GPU_MANUFACTURER: "nvidia",
            KARPENTER_GPU_COUNT: "1",
            KARPENTER_GPU_MEMORY_MIB: "23034",
        }
    assert len(l4["offerings"]) == 8, "2 regions x 2 zones x spot and on-demand"
    assert len(zones) == 4


def test_spot_that_ran_out_is_left_out_of_that_region_only() -> None:
    before, after = _types(), _types({"eu-west-1": ["g6.xlarge"]})

    def offered(types: dict[str, dict[str, Any]], name: str) -> set[tuple[str, str, str]]:
        return {
            (_labels(o)[NODE_REGION], _labels(o)[NODE_ZONE], _labels(o)[KARPENTER_CAPACITY_TYPE])
            for o in types[name]["offerings"]
        }

    removed = offered(before, "g6.xlarge") - offered(after, "g6.xlarge")
    assert removed == {("eu-west-1", "eu-west-1a", "spot"), ("eu-west-1", "eu-west-1b", "spot")}
    assert offered(after, "g6.xlarge") < offered(before, "g6.xlarge")
    assert after["p5.48xlarge"] == before["p5.48xlarge"]
    # Karpenter's KWOK provider marks every offering available when it reads the file anyway.
    assert all(o["Available"] is True for t in after.values() for o in t["offerings"])


def test_the_file_is_json_karpenter_can_read() -> None:
    text = json.dumps(fleet.render_instance_types(ELASTIC, DEFAULT_CATALOG))

    assert json.loads(text)[0]["offerings"][0]["Requirements"][0]["key"] == KARPENTER_CAPACITY_TYPE


def test_a_region_the_catalog_does_not_price_is_refused() -> None:
    pricing = json.loads(json.dumps(DEFAULT_PRICING))
    for by_capacity in pricing["gpuHourlyUSD"].values():
        for by_region in by_capacity.values():
            by_region.pop("eu-west-1", None)
    catalog = PriceCatalog.model_validate(pricing)

    with pytest.raises(
        fleet.FleetError, match=r"no spot price for NVIDIA-H100-80GB-HBM3 in eu-west"
    ):
        fleet.render_instance_types(ELASTIC, catalog)


# --- NodePools ----------------------------------------------------------------------------------


def test_one_gpu_tainted_nodepool_per_capacity_type_on_the_kwok_node_class() -> None:
    node_class, *pools = fleet.render_node_pools(ELASTIC)

    assert node_class == {
        "apiVersion": "karpenter.kwok.sh/v1alpha1",
        "kind": "KWOKNodeClass",
        "metadata": {"name": "default"},
    }
    assert [p["metadata"]["name"] for p in pools] == ["gpu-spot", "gpu-on-demand"]
    for pool, capacity in zip(pools, ["spot", "on-demand"], strict=True):
        spec = pool["spec"]
        template = spec["template"]["spec"]
        assert pool["apiVersion"] == "karpenter.sh/v1"
        assert template["requirements"] == [
            {"key": KARPENTER_CAPACITY_TYPE, "operator": "In", "values": [capacity]}
        ]
        assert template["nodeClassRef"] == {
            "group": "karpenter.kwok.sh",
            "kind": "KWOKNodeClass",
            "name": "default",
        }
        assert template["taints"] == [{"key": GPU_RESOURCE, "effect": "NoSchedule"}]
        assert spec["limits"] == {"cpu": "4000", GPU_RESOURCE: "128"}
        assert spec["disruption"] == {
            "consolidationPolicy": "WhenEmptyOrUnderutilized",
            "consolidateAfter": "30s",
        }


def test_consolidate_after_comes_from_the_fleet_file() -> None:
    quick = ELASTIC.model_copy(
        update={"karpenter": ELASTIC.karpenter.model_copy(update={"consolidate_after": "5s"})}
    )

    pools = fleet.render_node_pools(quick)[1:]

    assert {p["spec"]["disruption"]["consolidateAfter"] for p in pools} == {"5s"}


def test_replicas_tolerate_the_nodepools_taint() -> None:
    from tidal.render.endpoint import _tolerations

    taint = fleet.render_node_pools(ELASTIC)[1]["spec"]["template"]["spec"]["taints"][0]
    for capacity in CapacityType:
        assert any(
            t["key"] == taint["key"]
            and t["effect"] == taint["effect"]
            and t["operator"] == "Exists"
            for t in _tolerations(capacity, SPOT_MARKERS)
        )


# --- The KWOK configuration -------------------------------------------------------------------


def _stages(text: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in yaml.safe_load_all(text) if d["kind"] == "Stage"}


def test_the_template_makes_pods_ready_at_once_by_default() -> None:
    ready = _stages(fleet.KWOK_TEMPLATE.read_text())["pod-ready"]

    assert ready["spec"]["delay"]["durationMilliseconds"] == 0


@pytest.mark.parametrize(("seconds", "millis"), [(0, 0), (30, 30000), (2.5, 2500)])
def test_the_rendered_config_sets_the_default_start_up_delay(seconds: float, millis: int) -> None:
    stages = _stages(fleet.render_kwok_config(fleet.KWOK_TEMPLATE.read_text(), seconds))

    assert stages["pod-ready"]["spec"]["delay"]["durationMilliseconds"] == millis


def test_a_pods_annotation_overrides_the_start_up_delay() -> None:
    delay = _stages(fleet.render_kwok_config(fleet.KWOK_TEMPLATE.read_text(), 30))["pod-ready"][
        "spec"
    ]["delay"]

    expression = delay["durationFrom"]["jq"]["expression"]
    assert expression == fleet.startup_expression(fleet.ModelLoad())
    # The annotation is asked first; the weights' timing only without it.
    assert expression.index(SIMULATED_STARTUP) < expression.index(SIMULATED_WEIGHTS_BYTES)


def test_the_model_load_rates_of_the_fleet_file_time_replicas_and_loaders() -> None:
    load = fleet.ModelLoad.model_validate(
        {
            "downloadMiBPerSecond": 111,
            "localReadMiBPerSecond": 222,
            "volumeReadMiBPerSecond": 333,
            "engineInitSeconds": 44,
        }
    )
    stages = _stages(fleet.render_kwok_config(fleet.KWOK_TEMPLATE.read_text(), 30, load))
    ready = stages["pod-ready"]["spec"]["delay"]["durationFrom"]["jq"]["expression"]
    for rate in ("/ 111", "/ 222", "/ 333", "+ 44"):
        assert rate in ready
    loaded = stages["pod-succeeded"]["spec"]["delay"]
    assert loaded["durationMilliseconds"] == 0
    assert loaded["durationFrom"]["jq"]["expression"] == fleet.loader_expression(load)
    assert "/ 111" in loaded["durationFrom"]["jq"]["expression"]
    # The loader reports the bytes it "copied", as the real one reports what it measured.
    template = stages["pod-succeeded"]["spec"]["next"]["statusTemplate"]
    assert f'index . "{SIMULATED_WEIGHTS_BYTES}"' in template
    assert "message:" in template


@pytest.mark.parametrize(
    "field", ["downloadMiBPerSecond", "localReadMiBPerSecond", "volumeReadMiBPerSecond"]
)
def test_a_rate_of_zero_is_refused(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        fleet.ModelLoad.model_validate({field: 0})


def test_a_bound_pod_runs_unready_first_then_the_delayed_stage_makes_it_ready() -> None:
    stages = _stages(fleet.render_kwok_config(fleet.KWOK_TEMPLATE.read_text(), 30))

    def conditions(stage: str) -> dict[str, str]:
        text = stages[stage]["spec"]["next"]["statusTemplate"]
        return dict(re.findall(r'- type: (\w+)\n\s+status: "(\w+)"', text))

    assert "phase: Running" in stages["pod-running"]["spec"]["next"]["statusTemplate"]
    assert conditions("pod-running") == {
        "Initialized": "True",
        "ContainersReady": "False",
        "Ready": "False",
    }
    assert conditions("pod-ready") == {"ContainersReady": "True", "Ready": "True"}
    ready_selector = {
        e["key"]: (e["operator"], e.get("values"))
        for e in stages["pod-ready"]["spec"]["selector"]["matchExpressions"]
    }
    assert ready_selector[".status.phase"] == ("In", ["Running"])
    assert ready_selector[".metadata.ownerReferences.[].kind"] == ("NotIn", ["Job"])


def test_rendering_keeps_every_go_template_as_written() -> None:
    template = fleet.KWOK_TEMPLATE.read_text()
    rendered = fleet.render_kwok_config(template, 12)

    def templates(text: str) -> dict[str, str]:
        return {n: s["spec"]["next"].get("statusTemplate", "") for n, s in _stages(text).items()}

    assert templates(rendered) == templates(template)
    assert "statusTemplate: |" in rendered, "templates stay readable blocks"
    other = list(yaml.safe_load_all(template))
    assert [d for d in yaml.safe_load_all(rendered) if d["kind"] != "Stage"] == [
        d for d in other if d["kind"] != "Stage"
    ]


def test_a_negative_start_up_time_is_refused() -> None:
    with pytest.raises(fleet.FleetError, match=">= 0"):
        fleet.render_kwok_config(fleet.KWOK_TEMPLATE.read_text(), -1)


@pytest.mark.parametrize(
    ("given", "env", "expected"),
    [(None, None, 30.0), (None, "4.5", 4.5), (7.0, "4.5", 7.0), (0.0, None, 0.0)],
)
def test_the_start_up_time_is_the_flag_else_the_environment_else_the_fleets(
    monkeypatch: pytest.MonkeyPatch, given: float | None, env: str | None, expected: float
) -> None:
    if env is None:
        monkeypatch.delenv(cluster.STARTUP_ENV, raising=False)
    else:
        monkeypatch.setenv(cluster.STARTUP_ENV, env)

    assert cluster._startup_seconds(given, ELASTIC) == expected


def test_a_malformed_start_up_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(cluster.STARTUP_ENV, "soon")

    with pytest.raises(cluster.ClusterError, match="TIDAL_SIM_STARTUP_SECONDS"):
        cluster._startup_seconds(None, ELASTIC)


# --- `tidal dev` commands -------------------------------------------------------------------------


def test_dev_up_takes_a_fleet_name_and_a_start_up_time() -> None:
    args = _parser().parse_args(["dev", "up", "--fleet", "elastic", "--startup-seconds", "12"])

    assert (args.fleet, args.startup_seconds) == ("elastic", 12.0)
    assert _parser().parse_args(["dev", "up"]).startup_seconds is None


def test_dev_spot_takes_a_region_an_optional_product_and_the_availability() -> None:
    args = _parser().parse_args(
        ["dev", "spot", "--region", "eu-west-1", "--product", "h100", "unavailable"]
    )

    assert (args.region, args.product, args.availability) == ("eu-west-1", "h100", "unavailable")
    assert _parser().parse_args(["dev", "spot", "--region", "r", "available"]).product is None


@pytest.mark.parametrize(
    "argv",
    [
        ["dev", "spot", "unavailable"],
        ["dev", "spot", "--region", "eu-west-1", "gone"],
        ["dev", "interrupt"],
        ["dev", "interrupt", "n", "--notice", "-1"],
        ["dev", "up", "--startup-seconds", "soon"],
    ],
)
def test_malformed_dev_commands_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args(argv)

    assert exc.value.code == 2


def test_dev_interrupt_defaults_to_a_two_minute_notice_and_returns_at_once() -> None:
    args = _parser().parse_args(["dev", "interrupt", "node-1"])

    assert (args.node, args.notice, args.wait) == ("node-1", 120.0, False)
    args = _parser().parse_args(["dev", "interrupt", "node-1", "--notice", "5", "--wait"])
    assert (args.notice, args.wait) == (5.0, True)


@pytest.mark.parametrize(
    "argv",
    [
        ["dev", "spot", "--region", "eu-west-1", "unavailable"],
        ["dev", "interrupt", "node-1", "--notice", "5"],
    ],
)
def test_the_harness_commands_need_a_running_cluster(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--workdir", str(tmp_path)]) == 1
    assert "no local cluster running" in capsys.readouterr().err


# --- State and helpers ------------------------------------------------------------------------


def test_a_state_file_from_before_the_elastic_fleet_still_loads(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text(
        json.dumps({"workdir": str(tmp_path), "bin_dir": "/b", "ports": {}, "pids": {}})
    )

    state = cluster.load_state(tmp_path)

    assert state is not None
    assert (state.elastic, state.unavailable_spot, state.helpers) == (False, {}, {})


def test_down_ends_waiting_helpers_and_never_signals_a_reused_pid(tmp_path: Path) -> None:
    helper = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", cluster.HELPER_MARK],
        start_new_session=True,
    )
    stranger = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    try:
        state = cluster.ClusterState(workdir=str(tmp_path), bin_dir="", ports={})
        state.helpers = {"reclaim-a": helper.pid, "reclaim-b": stranger.pid}

        assert cluster.helper_alive(helper.pid)
        assert not cluster.helper_alive(stranger.pid)
        cluster.stop_helpers(state)

        assert helper.wait(timeout=10) is not None
        assert stranger.poll() is None, "a process that is not our helper was signalled"
        assert state.helpers == {}
    finally:
        for proc in (helper, stranger):
            proc.kill()
            proc.wait(timeout=10)


def test_a_helper_that_ended_on_its_own_is_reaped_not_left_as_an_unwaited_child(
    tmp_path: Path,
) -> None:
    pid = cluster._spawn(
        "reclaim-done",
        [sys.executable, "-c", "pass", cluster.HELPER_MARK],
        tmp_path,
        bind_to_parent=False,
    )
    child = cluster._CHILDREN[pid]
    deadline = time.monotonic() + 10
    while cluster.alive(pid):  # a zombie counts as ended
        assert time.monotonic() < deadline, "the helper did not end"
        time.sleep(0.05)
    state = cluster.ClusterState(workdir=str(tmp_path), bin_dir="", ports={})
    state.helpers = {"reclaim-done": pid}

    cluster.stop_helpers(state)

    # Waited for through its Popen: no zombie, and no "still running" when it is collected.
    assert child.returncode == 0
    assert pid not in cluster._CHILDREN
    assert state.helpers == {}
