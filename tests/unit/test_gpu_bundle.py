"""The GPU test bundle (`make gpu-bundle`): the pinned distributions and Tidal's NVML path alone,
under what a GPU machine carries, and a `run.py` that runs the GPU suite and writes its report
where nothing but the bundle can be imported.

The bundle is built once for the module, as `make gpu-bundle` builds it (every Python of
`PYTHONS`), into a temporary folder. Building needs the package index (pip downloads the pinned
wheels, about 12 MB, into a wheelhouse of the session; pip's own cache serves them after the first
time); it takes about 20 s. The suite then runs on the fake NVML of `tests/fakes/nvml.py` (two
H100s, this process on GPU 0), launched from a clean environment with Python's own interpreter,
not the project's virtualenv.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.gpu import bundle

from tidal.api.telemetry import GpuTelemetry

ROOT = Path(__file__).resolve().parents[2]
FAKE_NVML = ROOT / "tests" / "fakes" / "nvml.py"
# What the operator needs and the NVML path must not: none of it is in the bundle.
HEAVY = ("kopf", "kubernetes", "aiohttp", "yaml", "prometheus_api_client", "qdrant_client")


def _interpreter() -> str:
    """This Python's own interpreter, outside any virtualenv (the venv's where none is found)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    base = Path(sys.base_prefix) / "bin" / f"python{version}"
    return str(base) if base.exists() else sys.executable


def _clean_env(home: Path) -> dict[str, str]:
    """No PYTHONPATH, no VIRTUAL_ENV, nothing of this session's environment but a PATH."""
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> bundle.Built:
    scratch = tmp_path_factory.mktemp("gpu-bundle")
    return bundle.build(scratch / "bundle", scratch / "wheels")


@pytest.fixture(scope="module")
def run(
    built: bundle.Built, tmp_path_factory: pytest.TempPathFactory
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """run.py on the fake NVML: its exit status and output, and the report it wrote."""
    where = tmp_path_factory.mktemp("gpu-run")
    report = where / "report.json"
    completed = subprocess.run(
        [
            _interpreter(),
            str(built.path / "run.py"),
            *("--report", str(report), "--fake-nvml", str(FAKE_NVML)),
        ],
        cwd=where,
        env=_clean_env(where),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert report.exists(), completed.stdout + completed.stderr
    return completed, json.loads(report.read_text())


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# --- what is in it ----------------------------------------------------------------------------


def test_the_bundle_is_well_under_what_a_gpu_machine_carries(built: bundle.Built) -> None:
    assert built.size_bytes == _folder_size(built.path)
    assert built.size_bytes < bundle.LIMIT_BYTES / 2


def test_the_bundle_holds_exactly_the_pinned_distributions(built: bundle.Built) -> None:
    assert bundle.installed(built.path) == bundle.pins()
    assert not (built.path / "bin").exists()
    for heavy in HEAVY:
        assert not (built.path / heavy).exists()
        assert not (built.path / f"{heavy}.py").exists()


def test_the_pins_are_the_projects(tmp_path: Path) -> None:
    pins = bundle.pins()
    assert pins["pydantic"] == "2.14.3"  # as pyproject.toml pins it
    assert pins["pydantic-core"] == bundle.TRANSITIVE["pydantic-core"]

    loose = tmp_path / "pyproject.toml"
    loose.write_text('[project]\ndependencies = ["pydantic>=2", "nvidia-ml-py==1", "pytest==2"]\n')
    with pytest.raises(bundle.BundleError, match=r"not pinned .*: pydantic$"):
        bundle.pins(loose)


def test_each_python_finds_its_own_compiled_pydantic_core(built: bundle.Built) -> None:
    compiled = sorted(p.name for p in (built.path / "pydantic_core").glob("*.so"))

    assert [name.split(".")[1] for name in compiled] == [
        f"cpython-{v.replace('.', '')}-x86_64-linux-gnu" for v in bundle.PYTHONS
    ]


def test_the_sources_are_the_nvml_path_and_the_gpu_suite(built: bundle.Built) -> None:
    shipped = sorted(
        str(p.relative_to(built.path / "tidal")) for p in built.path.rglob("tidal/**/*.py")
    )
    suite = sorted(p.name for p in (built.path / "tests" / "gpu").iterdir())

    assert shipped == sorted(bundle.TIDAL_MODULES)
    assert suite == ["__init__.py", "conftest.py", "cuda.py", "test_nvml.py"]
    assert (built.path / "run.py").read_text() == (ROOT / "tests" / "gpu" / "run.py").read_text()


def test_an_existing_folder_that_is_not_a_bundle_is_never_replaced(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("mine")

    with pytest.raises(bundle.BundleError, match="not a bundle"):
        bundle.build(precious, tmp_path / "wheels")
    assert (precious / "notes.txt").read_text() == "mine"


# --- running it -------------------------------------------------------------------------------


def test_the_gpu_suite_passes_on_the_fake_nvml(
    run: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    completed, report = run
    outcomes = {r["test"].rpartition("::")[2]: r["outcome"] for r in report["tests"]["results"]}

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert report["tests"]["exitCode"] == 0
    assert outcomes == {
        "test_every_gpu_is_read_with_plausible_values": "passed",
        "test_the_document_names_products_in_label_form": "passed",
        "test_the_cli_prints_one_nvml_reading": "passed",
        # No libcuda here: the fake lists this process without a real CUDA context.
        "test_a_process_holding_a_cuda_context_is_listed_with_its_memory": "skipped",
    }
    assert "tests: 3 passed, 1 skipped (exit 0)" in completed.stdout


def test_the_report_has_the_readings_the_processes_and_the_document(
    run: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    _, report = run
    pid = report["cudaContext"]["pid"]

    assert report["nvml"] == {"source": "nvml", "driverVersion": "580.65.06", "error": None}
    assert [(g["index"], g["name"], g["memoryUsedMiB"]) for g in report["gpus"]] == [
        (0, "NVIDIA H100 80GB HBM3", 1536),
        (1, "NVIDIA H100 80GB HBM3", 0),
    ]
    (process,) = report["processes"]
    assert (process["pid"], process["gpuIndex"], process["memoryUsedMiB"]) == (pid, 0, 512)
    assert process["utilizationPercent"] == 25.0  # the mean of the fake's samples 20 and 30
    assert report["unattributedProcesses"] == 1  # --once knows no pods
    document = GpuTelemetry.model_validate(report["document"])
    assert document.source == "nvml"
    assert [g.product for g in document.gpus] == ["NVIDIA-H100-80GB-HBM3"] * 2
    assert report["fakeNvml"] == str(FAKE_NVML)
    assert report["bundle"]["packages"] == bundle.pins()


def test_the_run_sees_nothing_but_the_bundle_and_pythons_own_library(
    built: bundle.Built, run: tuple[subprocess.CompletedProcess[str], dict[str, Any]]
) -> None:
    _, report = run
    isolation = report["isolation"]

    assert isolation["sysPath"][0] == str(built.path)
    for entry in isolation["sysPath"][1:]:
        assert entry.startswith(sys.base_prefix), entry
        assert "site-packages" not in entry, entry
    assert not set(HEAVY) & set(isolation["modules"])
    # Nothing shipped for nothing: the run imported every Tidal module the bundle holds.
    assert isolation["tidalModules"] == report["bundle"]["tidal"]


def test_even_the_projects_own_interpreter_cannot_import_the_operator_there(
    built: bundle.Built, tmp_path: Path
) -> None:
    """run.py re-executes itself as `python -I -S`: started from the virtualenv, it still sees
    none of the virtualenv's packages."""
    probe = f"import sys; sys.path.insert(0, {str(built.path)!r}); import pydantic, pynvml, kopf"

    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe],
        env=_clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode != 0
    assert "No module named 'kopf'" in result.stderr


def test_the_nvml_path_imports_neither_kopf_nor_kubernetes() -> None:
    """What the bundle relies on, checked in the project's own environment (where both exist)."""
    probe = (
        "import sys, tidal.cli, tidal.agent.snapshot; tidal.cli._parser();"
        " print(' '.join(sorted({m.partition('.')[0] for m in sys.modules})))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), str(ROOT)])}

    result = subprocess.run(
        [sys.executable, "-c", probe],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    assert not set(HEAVY) & set(result.stdout.split())
