"""Start `aura_node` (node `aura`) with its parameter file, remappable inputs and a namespace.

    ros2 launch aura_ros aura.launch.py model_dir:=/path/to/model device:=cuda \
        image:=/camera/color/image_raw joint_states:=/joint_states namespace:=robot1

The launch arguments model_dir and device override the parameter file. Under SROS2, pass the
node's enclave (created with `ros2 security create_enclave`), e.g. enclave:=/aura_ros/aura, with
ROS_SECURITY_KEYSTORE set, ROS_SECURITY_ENABLE=true and ROS_SECURITY_STRATEGY=Enforce.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def ros_arguments(log_level: str, enclave: str) -> list:
    """ROS arguments of the node: `--enclave` only when one is given (empty = no security)."""
    args = ['--log-level', log_level]
    if enclave:
        args += ['--enclave', enclave]
    return args


def _node(context):
    """The node, built once the launch arguments are known (so an empty enclave is left out)."""
    return [Node(
        package='aura_ros',
        executable='aura_node',
        name='aura',
        namespace=LaunchConfiguration('namespace'),
        parameters=[LaunchConfiguration('params_file'),
                    {'model_dir': LaunchConfiguration('model_dir'),
                     'device': LaunchConfiguration('device')}],
        remappings=[('image', LaunchConfiguration('image')),
                    ('joint_states', LaunchConfiguration('joint_states'))],
        arguments=['--ros-args', *ros_arguments(LaunchConfiguration('log_level').perform(context),
                                                LaunchConfiguration('enclave').perform(context))],
        output='screen',
        emulate_tty=True,
    )]


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
        DeclareLaunchArgument('enclave', default_value='',
                              description='SROS2 enclave of the node (e.g. /aura_ros/aura); '
                                          'empty = none'),
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=_node)])
