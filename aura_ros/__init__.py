"""aura_ros: a ROS 2 robot policy with AURA (Action-Utility Recurrent Adaptive Memory)."""

__version__ = '0.1.0'
