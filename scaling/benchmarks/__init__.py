"""Developer benchmarks behind `python -m scaling.bench` and `python -m scaling.status_bench`: each prints ratios
against a reference measured in the same run (speed is never asserted in tests)."""
