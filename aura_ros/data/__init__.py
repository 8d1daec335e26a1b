"""Demonstration data: readers for rosbag2 and LeRobot datasets, aligned on the camera clock."""

from .demonstrations import DataError, Demonstrations, Episode

__all__ = ['DataError', 'Demonstrations', 'Episode']
