"""Benchmarks: each module compares us with a peer in one run and prints a table.

Run them as ``bci bench NAME [--json PATH]``; results are recorded in RESULTS.md.
"""
