"""Tidal's OpenAI-compatible gateway (`tidal gateway`): the front door of every InferenceEndpoint.

It routes each request by its `model` to the endpoint serving it and balances across that
endpoint's ready Pods by least in-flight requests; while an endpoint has no ready replica it
asks the operator to wake it and holds the request through the cold start; it measures what
clients see (latency, time to first token, tokens) as Prometheus metrics and tells the operator
how busy each endpoint is (`/internal/inflight`, `tidal.dev/last-request-time`).

Modules: `routing` (pure: objects -> routes and replicas, the routing rule), `pool` (the live
catalog and balancing), `addressing` (pod IP, or the test map), `tokens` (counting), `proxy`
(a request's life), `signalling` (the annotations), `watching` (list+watch threads), `server`
(the aiohttp apps), `metrics`, `config`, `errors`, `main` (the process). Only `signalling` and
`watching`/`main` reach the API server, through `tidal.clients.gatewaykube`.
"""
