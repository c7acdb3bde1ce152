"""Benchmarks: `python -m benchmarks` runs the suite (one table of ratios, each against a baseline
run in the same command); the scripts beside this file also run on their own."""
