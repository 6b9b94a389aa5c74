"""Benchmarks that print ratios against a baseline measured in the same run.

`python -m bench.fanout` measures planning a city-wide notice, and e-mail throughput through the
hub against the bare library and a naive one-job-per-message design.
"""
