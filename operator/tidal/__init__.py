"""Tidal: a Kubernetes operator for hybrid GPU inference endpoints and vector collections.

The package is split into layers (enforced by import-linter, see `.importlinter`):
`controllers` (thin Kopf handlers) -> pure decisions (`placement`, `render`, `scaling`, `residency`,
`cost`, `sizing`) -> `api` (pydantic models). Only `clients` touch external systems.
"""

__version__ = "0.1.0"
