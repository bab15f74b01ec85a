"""Benchmark harness for chatserver: ``python -m bench`` (``make bench``).

See docs/performance.md for the scenarios, the targets and how to read the results.
"""
