"""A fleet of simulated Vigil agents for scale benchmarks (like Fleet's osquery-perf).

Every simulated agent has its own P-256 key, a real client certificate from the collector's
CA, and its own mutual-TLS connection and ``Connect`` stream to a real collector on loopback.
See :mod:`bench.sim.agent` for what one agent does and :mod:`bench.sim.fleet` for how the
benchmark drives thousands of them from a few processes.
"""

from .fleet import Fleet, FleetError
from .identity import Identity, enrol_over_wire, mint

__all__ = ["Fleet", "FleetError", "Identity", "enrol_over_wire", "mint"]
