"""Vigil collector: enrolment, mTLS ingest, store, triage, alerts, rule fan-out, console.

Entry point: ``vigil-collector`` (:func:`collector.cli.main`).
"""

__all__: list[str] = []
