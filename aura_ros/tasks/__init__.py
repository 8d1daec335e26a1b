"""Task generators for training and benchmarks (torch only, no ROS).

The synthetic task's names load on first use, so the SO-101 world's knobs
(aura_ros.tasks.so101_config) are read without importing torch.
"""

__all__ = ['EASY', 'HARD', 'PRESETS', 'Stream', 'StreamConfig', 'sample']


def __getattr__(name: str):
    if name in __all__:
        from . import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
