"""Data residency, as pure decisions: where a workload's replicas and data may live.

`policy` reads a Namespace's `tidal.dev/allowed-regions`; `checks` finds an endpoint's replicas
outside its allowed regions; `vector` is a VectorCollection's residency. No IO, no clock, no Kopf.
"""
