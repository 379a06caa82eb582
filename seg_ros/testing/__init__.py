"""Helpers shared by the tests and the benchmarks: tiny model configs, fault injection."""
