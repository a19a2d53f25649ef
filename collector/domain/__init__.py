"""Pure domain logic: vocabulary, triage, the status lifecycle and the scoring seam.

Nothing here touches a database, the network or the clock.
"""
