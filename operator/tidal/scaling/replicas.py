"""The replica count an InferenceEndpoint runs while no load signal drives it.

Owns: `desired_replicas(spec)`, the interim rule the reconcile uses until load-driven scaling
(`scaling.autoscale`) takes over: at least one replica (scale to zero needs the gateway to wake
it), at least `minReplicas`, never more than `maxReplicas`. Placement decides where they run.

Must not: do IO, read the clock, or know Kopf.
"""

from __future__ import annotations

from tidal.api.endpoint import InferenceEndpointSpec

__all__ = ["desired_replicas"]


def desired_replicas(spec: InferenceEndpointSpec) -> int:
    """max(1, minReplicas), capped at maxReplicas."""
    floor = max(1, spec.scaling.min_replicas)
    return min(floor, spec.scaling.effective_max_replicas)
