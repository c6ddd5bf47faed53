"""Thin Kopf handlers: parse -> observe -> decide -> apply -> status.

Decisions live in the pure packages (`placement`, `render`, ...); Kubernetes IO lives in
`tidal.clients`. Handlers here only wire them together, post Events and write status. Importing
`tidal.controllers.inference` registers the InferenceEndpoint handlers (and, through it, the Kopf
indexes of `indexes`: nodes, GPU pods, namespace policies, collections) with Kopf;
`observation` translates what a reconcile observed into the planner's and builders' inputs;
`main.run` starts the operator.
"""
