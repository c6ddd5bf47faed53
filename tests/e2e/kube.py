"""A small kubectl wrapper for the e2e tests: they assert on what the API server holds."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class KubectlError(AssertionError):
    def __init__(self, args: tuple[str, ...], stderr: str) -> None:
        super().__init__(f"kubectl {' '.join(args)}: {stderr}")
        self.stderr = stderr


@dataclass
class Kube:
    kubeconfig: Path
    kubectl: Path
    workdir: Path | None = None

    def run(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        proc = subprocess.run(
            [str(self.kubectl), f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and proc.returncode != 0:
            raise KubectlError(args, proc.stderr.strip())
        return proc.stdout if proc.returncode == 0 else proc.stdout + proc.stderr

    def apply(self, obj: dict[str, Any] | str, namespace: str | None = None) -> str:
        text = obj if isinstance(obj, str) else yaml.safe_dump(obj)
        extra = ["-n", namespace] if namespace else []
        return self.run("apply", *extra, "-f", "-", stdin=text)

    def try_apply(self, obj: dict[str, Any], namespace: str) -> tuple[bool, str]:
        """Apply and return (accepted, server message) instead of raising."""
        try:
            return True, self.apply(obj, namespace)
        except KubectlError as err:
            return False, err.stderr

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        extra = ["-n", namespace] if namespace else []
        proc_out = self.run("get", kind, name, *extra, "-o", "json", "--ignore-not-found")
        return json.loads(proc_out) if proc_out.strip() else None

    def list(
        self, kind: str, namespace: str | None = None, selector: str | None = None
    ) -> list[dict[str, Any]]:
        extra = ["-n", namespace] if namespace else ["-A"]
        if selector:
            extra += ["-l", selector]
        items: list[dict[str, Any]] = json.loads(self.run("get", kind, *extra, "-o", "json"))[
            "items"
        ]
        return items

    def nodes(self) -> dict[str, dict[str, Any]]:
        return {n["metadata"]["name"]: n for n in self.list("nodes", namespace=None)}


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None
