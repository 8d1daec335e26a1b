"""Benchmark rigs that drive a live aura_node over DDS: soak, fuzzing, end-to-end latency
(numbers for docs/results; the product node never imports them)."""
