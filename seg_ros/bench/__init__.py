"""Benchmarks: `make bench` / `python -m seg_ros.bench` print one JSON object per line."""
