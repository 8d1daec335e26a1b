"""Training and benchmarks (imports tasks and memory; never ROS)."""
