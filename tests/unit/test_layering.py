"""The import contracts in `.importlinter` fail when a layer is crossed, not only pass today.

Each case copies the package to a temporary source root, adds one forbidden import, and runs
`lint-imports` with the repository's own config against the copy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import tidal

PACKAGE = Path(tidal.__file__).resolve().parent
CONFIG = PACKAGE.parents[1] / ".importlinter"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_copy(tmp_path: Path, module: str, source: str) -> subprocess.CompletedProcess[str]:
    """`lint-imports` over a copy of the package where `module` (a path inside it) gets
    `source` appended."""
    root = tmp_path / "src"
    shutil.copytree(PACKAGE, root / "tidal", ignore=shutil.ignore_patterns("__pycache__"))
    target = root / "tidal" / module
    existing = target.read_text() if target.exists() else ""
    target.write_text(existing + "\n" + source + "\n")
    # The copy comes first on the path, ahead of the editable install of the real package.
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(CONFIG), "--no-cache", "--no-logo"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("module", "source", "contract", "offender"),
    [
        (
            "placement/crossed.py",
            "from tidal.render import endpoint",
            "Decision modules are independent of each other BROKEN",
            "tidal.placement.crossed -> tidal.render.endpoint",
        ),
        (
            "api/labels.py",
            "from tidal.api import common",
            "Inside api: the wire vocabulary (labels, wire) at the bottom, importing nothing of"
            " Tidal BROKEN",
            "tidal.api.labels -> tidal.api.common",
        ),
        (
            "gateway/crossed.py",
            "from tidal.controllers import admission",
            "Controllers, agent, gateway and dev cluster are independent of each other BROKEN",
            "tidal.gateway.crossed -> tidal.controllers.admission",
        ),
        (
            "clients/vectorengine.py",
            "from tidal.clients import engines",
            "No import cycle between the modules of clients/ BROKEN",
            ".vectorengine -> .engines",
        ),
    ],
)
def test_a_crossed_layer_breaks_its_contract(
    tmp_path: Path, module: str, source: str, contract: str, offender: str
) -> None:
    result = lint_copy(tmp_path, module, source)
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0, output
    assert contract in output
    assert offender in output
