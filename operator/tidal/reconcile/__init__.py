"""One pure reconcile per kind: `decide(obj, world, memory, now) -> Outcome`.

`endpoint` composes the decisions for an InferenceEndpoint; `world` holds what a reconcile
observed; `observation` translates observed objects into the decisions' inputs. Nothing here
does IO, reads the clock or knows Kopf (import-linter enforces it); the controllers observe,
call `decide` and carry out the Outcome, and the benchmarks can call `decide` the same way.
"""
