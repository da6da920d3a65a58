"""
Stress tests (issue 9): the real C{twistd -n pushpin} on loopback ports under connection
churn, publish floods with a stalled reader, hostile bytes on every input, and origins
that misbehave. Each test starts its own proxy, asserts that it survives, counts what was
delivered and what was dropped (nothing may go missing unreported), and bounds its memory.

By default the whole directory runs in about a minute on a 2-core machine, so CI runs it
with the rest of the suite (C{python -m pytest}). The slow tests carry the C{stress}
marker: C{-m "not stress"} leaves them out, C{-m stress} runs only them.

Bigger waves and floods, one command (sizes multiply by the scale; allow several minutes)::

    PUSHPIN_TX_STRESS_SCALE=10 python -m pytest tests/stress -m stress -q --timeout=600
"""
