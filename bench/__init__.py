"""Vigil benchmarks. Run ``python -m bench --help``."""
