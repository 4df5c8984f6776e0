"""The benchmark suite of issue 5: every cost of the clean room beside a baseline
measured in the same run. Run ``python -m bench [--quick] [--json PATH]``; see
docs/benchmarks.md."""
