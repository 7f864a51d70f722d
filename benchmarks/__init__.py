"""Timing harness for the deployed job functions against the ops layer.

``python -m benchmarks.run`` builds generated platforms, times every operation
of the performance targets on both layers in the same run, and writes
``benchmarks/RESULTS.md``. Not part of the test suite.
"""
