"""api.labels: every key Tidal reads or writes is defined once, there, and nowhere else."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tidal.api import labels
from tidal.api.labels import SPOT_MARKERS, CapacityType

PACKAGE = Path(labels.__file__).resolve().parents[1]
# A qualified Kubernetes label/annotation key: an optional DNS-subdomain prefix and a name.
_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
# Constants of the module that are not keys: a label value and Kopf's annotation prefix.
_NOT_KEYS = frozenset({"MANAGER", "KOPF_PREFIX"})


def keys() -> dict[str, str]:
    return {
        name: value
        for name, value in vars(labels).items()
        if name.isupper() and isinstance(value, str) and name not in _NOT_KEYS
    }


def test_every_key_is_a_valid_qualified_name() -> None:
    for name, key in keys().items():
        prefix, _, rest = key.rpartition("/")
        assert len(prefix) <= 253, name
        assert not prefix or _PREFIX.match(prefix), name  # optional: pod-template-hash
        assert len(rest) <= 63, name
        assert _NAME.match(rest), name


def test_each_key_has_one_name() -> None:
    by_value: dict[str, list[str]] = {}
    for name, key in keys().items():
        by_value.setdefault(key, []).append(name)
    assert {key: names for key, names in by_value.items() if len(names) > 1} == {}


def test_spot_markers_name_tidals_own_label_and_its_spot_value() -> None:
    assert (labels.LABEL_CAPACITY_TYPE, CapacityType.SPOT.value) in SPOT_MARKERS
    assert len(set(SPOT_MARKERS)) == len(SPOT_MARKERS)
    assert set(keys().values()) >= {key for key, _value in SPOT_MARKERS}


def _string_constants(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, value) of each string constant that is not a docstring."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        if id(node) not in docstrings
    ]


def test_no_other_module_spells_a_key_or_a_time_format() -> None:
    spelled = set(keys().values())
    home = {PACKAGE / "api" / "labels.py", PACKAGE / "api" / "wire.py"}
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path in home:
            continue
        for lineno, value in _string_constants(ast.parse(path.read_text(), str(path))):
            if value in spelled or "%Y" in value:
                found.append(f"{path.relative_to(PACKAGE)}:{lineno}: {value!r}")
    assert found == []
