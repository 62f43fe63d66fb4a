"""The benchmarks, run as ``python -m bench`` (BENCHMARKS.md).

``stack`` opens the database, the queue and the processes (through tests/harness.py),
``load`` drives the API, ``proxy`` counts round trips on the wire, ``seed`` writes
history, ``scenarios`` measures and ``report`` prints the table.
"""
