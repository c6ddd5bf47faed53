"""The GPU telemetry node agent (`tidal agent`), run as a DaemonSet on GPU nodes or, simulated,
as one process for the whole local fleet.

Owns: sampling a GPU backend (`clients.nvml.GpuBackend`: NVML, or `simulation.SimulatedBackend`),
attributing GPU use to pods (`attribution`), the averaging window (`averaging`), when to publish
(`publishing`), the Prometheus exposition (`exposition`), the HTTP endpoints (`server`), the
loop that ties them together (`main`), its settings (`config`) and one reading without the loop
(`snapshot`, `--once`). Must not: import kubernetes or pynvml itself (both sit behind
`tidal.clients`), or decide anything about placement: it reports, the operator decides.

`snapshot` and what it imports (`config`, `publishing`, `averaging`, `attribution`,
`clients.nvml`, `api.telemetry`) need only pydantic and nvidia-ml-py: that is what the GPU test
bundle ships, so none of them may import kubernetes, aiohttp or YAML.

The document it writes is `tidal.api.telemetry.GpuTelemetry`, annotation `tidal.dev/gpu-telemetry`.
"""
