"""Vigil agent: watches window titles, typed phrases and removable media in the pupil's
desktop session, turns rule hits into captures, spools them durably and streams them to the
collector over mutual-TLS gRPC.

Entry point: ``vigil-agent`` (``agent.cli:main``). The only module that picks an OS backend is
``agent.platform``.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
