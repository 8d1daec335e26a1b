"""Demonstration data: readers for rosbag2 and LeRobot datasets, aligned on the camera clock.

    from aura_ros.data import DataConfig, load_demonstrations
    demos = load_demonstrations('recordings/', DataConfig(chunk=8))

`load_demonstrations` is imported on first use: it pulls in the readers (rosbags, PyAV,
pyarrow) and the runtime's resize, which the container alone does not need.
"""

from .config import DataConfig, DataConfigError
from .demonstrations import DataError, Demonstrations, Episode

__all__ = ['DataConfig', 'DataConfigError', 'DataError', 'Demonstrations', 'Episode',
           'load_demonstrations']


def __getattr__(name):
    if name == 'load_demonstrations':
        from .load import load_demonstrations

        return load_demonstrations
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
