"""Benchmarks (`make bench`): measured on the local control plane, reported in
docs/benchmarks.md. Not tests: nothing here asserts a time."""
