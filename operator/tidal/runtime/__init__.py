"""Kopf-aware plumbing both kinds share; decides nothing.

`services` (startup: Prometheus, prices, gateways, /metrics), `triggers` (per-object
serialize-and-coalesce), `indexes` (Kopf indexes and what a reconcile captures from them),
`refresh` (one phased ticker per kind), `pricing` (the one price cache), `load` (gateway load),
`memory` (measurements and reconcile memory per endpoint), `settings` (`TIDAL_*`), `errors`
(Tidal's error tree to Kopf's), `objects` (owners and Event posting).
"""
