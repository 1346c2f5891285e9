"""Benchmarks (scripts, not tests): `shapemask bench model`, `shapemask bench runtime`, and the geometry
timer `python -m shapemask_ros.bench.geometry_bench`. Commands and results: docs/benchmarks.md."""
