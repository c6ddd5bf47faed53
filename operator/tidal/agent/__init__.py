"""The GPU telemetry node agent (`tidal agent`), run as a DaemonSet on GPU nodes or, simulated,
as one process for the whole local fleet.

Owns: sampling a GPU backend (`clients.nvml.GpuBackend`: NVML, or `simulation.SimulatedBackend`),
attributing GPU use to pods (`attribution`), the averaging window (`averaging`), when to publish
(`publishing`), the Prometheus exposition (`exposition`), the HTTP endpoints (`server`) and the
loop that ties them together (`main`). Must not: import kubernetes or pynvml itself (both sit
behind `tidal.clients`), or decide anything about placement: it reports, the operator decides.

The document it writes is `tidal.api.telemetry.GpuTelemetry`, annotation `tidal.dev/gpu-telemetry`.
"""
