"""The headless demo on a machine with ROS 2: the SO-101 world in MuJoCo driving aura_node.

    ros2 launch aura_ros demo.launch.py tasks:=10

Without `ros2 launch`, `python -m aura_ros demo` (or `make demo`) starts the same two nodes,
joined by the same parameters (`LOCKSTEP_NODE`, `LOCKSTEP_SIM` of
aura_ros/ros/so101/closed_loop.py, which its `run_loop` passes too), and prints one line per task.
`so101_sim` runs lock-step: it publishes a frame, waits for the chunk aura_node computes from it
and executes it like joint_trajectory_controller, then steps the physics one frame; its sim time
goes out on /clock, so aura_node runs with use_sim_time. Until the first chunk arrives the world
stands still and republishes its first frame, so the order the two processes start in does not
matter. The launch ends when the simulator has run `tasks` tasks.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from aura_ros.ros.so101.closed_loop import LOCKSTEP_NODE, LOCKSTEP_SIM


def generate_launch_description():
    share = get_package_share_directory('aura_ros')
    arguments = [
        DeclareLaunchArgument('model_dir', default_value='',
                              description='model directory; empty = the bundled SO-101 model'),
        DeclareLaunchArgument('tasks', default_value='10',
                              description='chained tasks before the demo ends'),
        DeclareLaunchArgument('seed', default_value='0', description='simulator seed'),
        DeclareLaunchArgument('distractor_prob', default_value='0.0',
                              description='chance per frame of a distractor flash (the bundled '
                                          'model was trained without them)'),
    ]
    policy = Node(package='aura_ros', executable='aura_node', name='aura', output='screen',
                  parameters=[os.path.join(share, 'config', 'aura.yaml'),
                              {'model_dir': LaunchConfiguration('model_dir'),
                               **LOCKSTEP_NODE}])
    simulator = Node(package='aura_ros', executable='aura_so101_sim', name='so101_sim',
                     output='screen',
                     parameters=[{**LOCKSTEP_SIM,
                                  'max_tasks': LaunchConfiguration('tasks'),
                                  'seed': LaunchConfiguration('seed'),
                                  'distractor_prob': LaunchConfiguration('distractor_prob')}])
    stop_with_simulator = RegisterEventHandler(OnProcessExit(
        target_action=simulator, on_exit=[EmitEvent(event=Shutdown(reason='demo finished'))]))
    return LaunchDescription([*arguments, policy, simulator, stop_with_simulator])
