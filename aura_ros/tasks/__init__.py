"""Task generators for training and benchmarks (torch only, no ROS)."""

from .synthetic import EASY, HARD, PRESETS, Stream, StreamConfig, sample

__all__ = ['EASY', 'HARD', 'PRESETS', 'Stream', 'StreamConfig', 'sample']
