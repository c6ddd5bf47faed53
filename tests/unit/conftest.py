"""Settings every unit test shares.

Hypothesis is told not to time examples (`deadline=None`): its default fails an example that
takes longer than 200 ms, which on a loaded CI machine is a timing assertion in a unit test and
failed `test_placement_properties` once under load. The rules are judged on what they return;
speed is the benchmarks' business. Example counts stay as each test sets them.
"""

from __future__ import annotations

from hypothesis import settings

settings.register_profile("tidal", deadline=None)
settings.load_profile("tidal")
