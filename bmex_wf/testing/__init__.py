"""Deterministic rule weights and small networks for tests and benchmarks (not for real use)."""
