"""Thin Kopf handlers: parse -> observe -> decide -> apply -> status.

Decisions live in the pure packages (`placement`, `render`, ...); Kubernetes IO lives in
`tidal.clients`. Handlers here only wire them together, post Events and write status. Importing
`tidal.controllers.inference` registers the InferenceEndpoint handlers with Kopf; `main.run`
starts the operator.
"""
