"""The interim spot/reserved split: how many of an endpoint's replicas go to each capacity type.

This stands in for the full planner (telemetry-aware, history-driven `Auto`) and holds only the
rules that need no observation: the replica count the spec asks for today and the policy's split
of it. Pure: no IO, no clock, no Kopf, no kubernetes client.
"""

from __future__ import annotations

from tidal.api.inference import CapacityPolicy, InferenceEndpointSpec

__all__ = ["desired_replicas", "explain_split", "split_replicas"]


def desired_replicas(spec: InferenceEndpointSpec) -> int:
    """Replicas to run now: at least one (scale to zero comes later), within maxReplicas."""
    floor = max(1, spec.scaling.min_replicas)
    return min(floor, spec.scaling.effective_max_replicas)


def split_replicas(spec: InferenceEndpointSpec, desired: int) -> tuple[int, int]:
    """Split `desired` replicas into (spot, reserved) according to `spec.capacity`.

    SpotPreferred puts as much as `maxSpotPercent` allows on spot, rounding the spot share down
    so the cap is never exceeded, and keeps `minReservedReplicas` on reserved. Auto has no GPU
    utilization history yet, so it behaves like SpotPreferred (DESIGN.md §1).
    """
    if desired < 0:
        raise ValueError(f"desired replicas must not be negative, got {desired}")
    capacity = spec.capacity
    if capacity.policy is CapacityPolicy.ReservedOnly:
        return 0, desired
    if capacity.policy is CapacityPolicy.SpotOnly:
        return desired, 0
    spot_cap = desired * capacity.max_spot_percent // 100
    reserved = min(desired, max(capacity.min_reserved_replicas, desired - spot_cap))
    return desired - reserved, reserved


def explain_split(spec: InferenceEndpointSpec, spot: int, reserved: int) -> str:
    """One line for `status.placement.reason`: the policy and the bound that shaped the mix."""
    capacity = spec.capacity
    mix = f"{spot} spot, {reserved} reserved"
    policy = capacity.policy
    if policy is CapacityPolicy.ReservedOnly:
        return f"{mix}: policy ReservedOnly"
    if policy is CapacityPolicy.SpotOnly:
        return f"{mix}: policy SpotOnly"
    prefix = (
        f"{mix}: policy Auto without GPU utilization history behaves as SpotPreferred"
        if policy is CapacityPolicy.Auto
        else f"{mix}: policy SpotPreferred"
    )
    bounds = []
    if capacity.min_reserved_replicas:
        bounds.append(f"minReservedReplicas={capacity.min_reserved_replicas}")
    if capacity.max_spot_percent < 100:
        bounds.append(f"maxSpotPercent={capacity.max_spot_percent}")
    return f"{prefix} ({', '.join(bounds)})" if bounds else prefix
