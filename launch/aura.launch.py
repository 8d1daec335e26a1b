"""Start `aura_node` (node `aura`) with its parameter file, remappable inputs and a namespace.

    ros2 launch aura_ros aura.launch.py model_dir:=/path/to/model device:=cuda \
        image:=/camera/color/image_raw joint_states:=/joint_states namespace:=robot1

The launch arguments model_dir and device override the parameter file.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    share = get_package_share_directory('aura_ros')
    arguments = [
        DeclareLaunchArgument('params_file',
                              default_value=os.path.join(share, 'config', 'aura.yaml'),
                              description='parameter file of aura_node'),
        DeclareLaunchArgument('namespace', default_value='', description='namespace of the node'),
        DeclareLaunchArgument('model_dir', default_value='',
                              description='model directory; empty = the bundled model'),
        DeclareLaunchArgument('device', default_value='auto', description='auto | cpu | cuda'),
        DeclareLaunchArgument('image', default_value='image', description='camera topic'),
        DeclareLaunchArgument('joint_states', default_value='joint_states',
                              description='joint state topic'),
        DeclareLaunchArgument('log_level', default_value='info', description='ROS log level'),
    ]
    node = Node(
        package='aura_ros',
        executable='aura_node',
        name='aura',
        namespace=LaunchConfiguration('namespace'),
        parameters=[LaunchConfiguration('params_file'),
                    {'model_dir': LaunchConfiguration('model_dir'),
                     'device': LaunchConfiguration('device')}],
        remappings=[('image', LaunchConfiguration('image')),
                    ('joint_states', LaunchConfiguration('joint_states'))],
        arguments=['--ros-args', '--log-level', LaunchConfiguration('log_level')],
        output='screen',
        emulate_tty=True,
    )
    return LaunchDescription([*arguments, node])
