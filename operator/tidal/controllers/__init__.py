"""Thin Kopf handlers, one module per kind: trigger -> observe -> decide -> apply.

Decisions live in `tidal.reconcile` (one pure `decide` per kind) and the decision packages
beneath it; Kubernetes IO lives in `tidal.clients`; the plumbing both kinds share (startup,
triggers, indexes, refresh, prices, memory, settings) in `tidal.runtime`. Importing
`tidal.controllers.endpoint` registers the InferenceEndpoint handlers (and, through
`tidal.runtime.indexes`, the Kopf indexes: nodes, GPU pods, namespace policies, collections,
children); `collection` the VectorCollection handlers; `admission` the webhooks; `main.run`
starts the operator.
"""
