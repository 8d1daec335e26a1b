"""The headless demo on a machine with ROS 2: the cue-reach simulator driving aura_node.

    ros2 launch aura_ros demo.launch.py duration_s:=60

Without `ros2 launch`, `python -m aura_ros demo` (or `make demo`) starts the same two nodes.
The simulator executes the absolute joint targets aura_node publishes, as a position controller
would. `fastdds_profile:=<share>/config/fastdds_large_frames.xml` gives both processes that Fast
DDS profile, as a robot's camera driver and aura_node with large frames need (the demo's 64x64
frames do not: empty, the default, leaves Fast DDS at its defaults).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    OpaqueFunction,
    RegisterEventHandler,
    SetEnvironmentVariable,
)
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def _profile(context):
    """Set FASTDDS_DEFAULT_PROFILES_FILE only when a profile is given."""
    path = LaunchConfiguration('fastdds_profile').perform(context)
    return [SetEnvironmentVariable('FASTDDS_DEFAULT_PROFILES_FILE', path)] if path else []


def generate_launch_description():
    share = get_package_share_directory('aura_ros')
    arguments = [
        DeclareLaunchArgument('model_dir', default_value='',
                              description='model directory; empty = the bundled model'),
        DeclareLaunchArgument('duration_s', default_value='60.0',
                              description='simulated seconds before the demo ends'),
        DeclareLaunchArgument('seed', default_value='0', description='simulator seed'),
        DeclareLaunchArgument('fastdds_profile', default_value='',
                              description='FASTDDS_DEFAULT_PROFILES_FILE of both nodes; empty = '
                                          'Fast DDS defaults'),
    ]
    profile = OpaqueFunction(function=_profile)
    policy = Node(package='aura_ros', executable='aura_node', name='aura', output='screen',
                  parameters=[os.path.join(share, 'config', 'aura.yaml'),
                              {'model_dir': LaunchConfiguration('model_dir')}])
    simulator = Node(package='aura_ros', executable='aura_sim', name='aura_sim', output='screen',
                     parameters=[{'duration_s': LaunchConfiguration('duration_s'),
                                  'seed': LaunchConfiguration('seed'),
                                  'action_mode': 'position'}])
    stop_with_simulator = RegisterEventHandler(OnProcessExit(
        target_action=simulator, on_exit=[EmitEvent(event=Shutdown(reason='demo finished'))]))
    return LaunchDescription([*arguments, profile, policy, simulator, stop_with_simulator])
