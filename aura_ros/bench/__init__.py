"""Benchmarks behind `python -m aura_ros bench ...` (numbers for docs/results, not unit tests)."""
