"""The agent's settings (`Config`, what `tidal agent`'s flags say) and its logging set-up.

Owns: validating a combination of settings and the process's log format. Must not: import
anything the NVML snapshot does not need (kubernetes, aiohttp, YAML): `tidal agent --once` and
the GPU test bundle (`make gpu-bundle`) build a `Config` without the loop's dependencies.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from tidal.agent.publishing import DEFAULT, Thresholds

__all__ = ["Config", "configure_logging"]


@dataclass(frozen=True)
class Config:
    node_name: str | None = None
    simulate: bool = False
    all_nodes: bool = False
    scenario: Path | None = None
    interval_seconds: float = 2.0
    window_seconds: float = 10.0
    refresh_seconds: float | None = None  # None: 30 s real, 3 s simulated
    thresholds: Thresholds = DEFAULT
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9400
    proc_root: Path = Path("/proc")

    def __post_init__(self) -> None:
        if self.all_nodes and not self.simulate:
            raise ValueError("--all-nodes needs --simulate: a real agent reads only its own GPUs")
        if not self.all_nodes and not self.node_name:
            raise ValueError("the node name is required (--node-name or $NODE_NAME)")
        if self.interval_seconds <= 0 or self.window_seconds < self.interval_seconds:
            raise ValueError("need 0 < interval <= window")

    @property
    def refresh(self) -> float:
        if self.refresh_seconds is not None:
            return self.refresh_seconds
        return 3.0 if self.simulate else 30.0


def configure_logging() -> None:
    level = (
        logging.DEBUG if os.environ.get("TIDAL_LOG_LEVEL", "").lower() == "debug" else logging.INFO
    )
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # The kubernetes client logs every retry of urllib3 at WARNING; ours say it once.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
