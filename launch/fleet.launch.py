"""Start one `aura_node` (node `aura`) serving a fleet: the robots and their topics from a file.

    ros2 launch aura_ros fleet.launch.py fleet_file:=/path/to/fleet.yaml model_dir:=/models/so101

The fleet file (config/fleet.yaml is the example; aura_ros/ros/fleet_file.py reads it) lists the
robots; the node gets `robots: [their names]` and, per robot, the remaps of its cameras,
joint_states and output groups. `ros2 service call /arm2/aura/reset std_srvs/srv/Trigger`
resets arm2's memory and nothing else. The other parameters come from `params_file` (default
config/aura.yaml); state_file, when set, is one file per robot (state.arm1.safetensors, ...).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from aura_ros.ros.fleet_file import fleet_remappings, load_fleet


def _node(context):
    value = {name: LaunchConfiguration(name).perform(context)
             for name in ('fleet_file', 'image_transport', 'log_level')}
    fleet = load_fleet(value['fleet_file'])
    return [Node(
        package='aura_ros',
        executable='aura_node',
        name='aura',
        namespace=LaunchConfiguration('namespace'),
        parameters=[LaunchConfiguration('params_file'),
                    {'robots': list(fleet),
                     'model_dir': LaunchConfiguration('model_dir'),
                     'device': LaunchConfiguration('device'),
                     'image_transport': LaunchConfiguration('image_transport')}],
        remappings=fleet_remappings(fleet, 'aura', value['image_transport']),
        arguments=['--ros-args', '--log-level', value['log_level']],
        output='screen',
        emulate_tty=True,
    )]


def generate_launch_description():
    share = get_package_share_directory('aura_ros')
    arguments = [
        DeclareLaunchArgument('fleet_file',
                              default_value=os.path.join(share, 'config', 'fleet.yaml'),
                              description='the robots and their topics'),
        DeclareLaunchArgument('params_file',
                              default_value=os.path.join(share, 'config', 'aura.yaml'),
                              description='parameter file of aura_node'),
        DeclareLaunchArgument('namespace', default_value='', description='namespace of the node'),
        DeclareLaunchArgument('model_dir', default_value='',
                              description='model directory; empty = the bundled model'),
        DeclareLaunchArgument('device', default_value='auto', description='auto | cpu | cuda'),
        DeclareLaunchArgument('image_transport', default_value='',
                              description='empty = as trained | raw | compressed'),
        DeclareLaunchArgument('log_level', default_value='info', description='ROS log level'),
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=_node)])
