"""Start `aura_node` (node `aura`) with its parameter file, remappable inputs and a namespace.

    ros2 launch aura_ros aura.launch.py model_dir:=/path/to/model device:=cuda \
        image:=/camera/color/image_raw joint_states:=/joint_states namespace:=robot1

A robot arm on joint_trajectory_controller with a separate gripper controller (a model with
output groups `arm` and `gripper`), two cameras, JPEG frames:

    ros2 launch aura_ros aura.launch.py model_dir:=/models/so101 image_transport:=compressed \
        cameras:='front:=/cam_front/image_raw wrist:=/cam_wrist/image_raw' \
        outputs:='arm:=/arm_controller/joint_trajectory
                  gripper:=/gripper_controller/joint_trajectory'

`cameras` maps each camera of the model to its topic (`<camera>/image` inside the node; a
one-camera model uses `image:=`), `outputs` maps each output group to its controller's topic
(`~/<group>` inside the node; a model without groups publishes `~/action_chunk`). With
image_transport:=compressed every camera topic gets `/compressed` on both sides, as
image_transport names it. `fastdds_profile` (default: the profile shipped in config/) is set as
FASTDDS_DEFAULT_PROFILES_FILE for the node; start the camera driver with the same file
(docs/results/frame_delivery.md: large frames need it in both processes).
`fastdds_profile:=none` = Fast DDS defaults (the variable is unset, also if the shell exported
it; `ros2 launch` refuses an empty `fastdds_profile:=`).

The launch arguments model_dir, device, image_transport, input_qos and autostart override the
parameter file. Under SROS2, pass the node's enclave (created with `ros2 security
create_enclave`), e.g. enclave:=/aura_ros/aura, with ROS_SECURITY_KEYSTORE set,
ROS_SECURITY_ENABLE=true and ROS_SECURITY_STRATEGY=Enforce.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    OpaqueFunction,
    SetEnvironmentVariable,
    UnsetEnvironmentVariable,
)
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def ros_arguments(log_level: str, enclave: str) -> list:
    """ROS arguments of the node: `--enclave` only when one is given (empty = no security)."""
    args = ['--log-level', log_level]
    if enclave:
        args += ['--enclave', enclave]
    return args


def fastdds_profile_file(value: str):
    """The node's FASTDDS_DEFAULT_PROFILES_FILE, or None for Fast DDS defaults.

    'none' (any case), and an empty or quoted-empty value ('' or "", which a shell can let
    through), mean defaults; anything else must be an existing file: Fast DDS itself only
    prints an XML parser error and carries on without the profile."""
    text = value.strip().strip('\'"').strip()
    if not text or text.lower() == 'none':
        return None
    if not os.path.isfile(text):
        raise ValueError(f'fastdds_profile: no such file {text!r} (fastdds_profile:=none for '
                         f'Fast DDS defaults)')
    return text


def _pairs(text: str, what: str) -> list:
    """'a:=/x b:=/y' (spaces or commas between) -> [('a', '/x'), ('b', '/y')]."""
    pairs = []
    for item in text.replace(',', ' ').split():
        name, sep, topic = item.partition(':=')
        if not sep or not name or not topic:
            raise ValueError(f'{what}: expected name:=topic, got {item!r}')
        pairs.append((name, topic))
    return pairs


def remappings(image: str, joint_states: str, features: str, cameras: str, outputs: str,
               transport: str) -> list:
    """The node's remaps: its relative input names and private output names -> real topics.
    An image_transport other than raw or compressed (empty: each camera as the model was trained;
    or per camera) remaps both forms of every camera topic: only the one subscribed applies."""
    suffixes = {'raw': ('',), 'compressed': ('/compressed',)}.get(transport, ('', '/compressed'))
    inputs = [('image', image)] + [(f'{name}/image', topic)
                                   for name, topic in _pairs(cameras, 'cameras')]
    rules = [(f'{name}{suffix}', f'{topic}{suffix}') for name, topic in inputs
             for suffix in suffixes if name != topic]
    rules += [(name, topic) for name, topic in (('joint_states', joint_states),
                                                ('features', features)) if name != topic]
    rules += [(f'~/{group}', topic) for group, topic in _pairs(outputs, 'outputs')]
    return rules


def _node(context):
    """The node, built once the launch arguments are known (remaps and enclave are computed)."""
    value = {name: LaunchConfiguration(name).perform(context) for name in (
        'image', 'joint_states', 'features', 'cameras', 'outputs', 'image_transport',
        'log_level', 'enclave', 'fastdds_profile')}
    profile = fastdds_profile_file(value['fastdds_profile'])
    actions = [SetEnvironmentVariable('FASTDDS_DEFAULT_PROFILES_FILE', profile) if profile
               else UnsetEnvironmentVariable('FASTDDS_DEFAULT_PROFILES_FILE')]
    actions.append(Node(
        package='aura_ros',
        executable='aura_node',
        name='aura',
        namespace=LaunchConfiguration('namespace'),
        parameters=[LaunchConfiguration('params_file'),
                    {'model_dir': LaunchConfiguration('model_dir'),
                     'device': LaunchConfiguration('device'),
                     'image_transport': LaunchConfiguration('image_transport'),
                     'input_qos': LaunchConfiguration('input_qos'),
                     'autostart': LaunchConfiguration('autostart')}],
        remappings=remappings(value['image'], value['joint_states'], value['features'],
                              value['cameras'], value['outputs'], value['image_transport']),
        arguments=['--ros-args', *ros_arguments(value['log_level'], value['enclave'])],
        output='screen',
        emulate_tty=True,
    ))
    return actions


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
        DeclareLaunchArgument('image', default_value='image',
                              description='camera topic of a one-camera model'),
        DeclareLaunchArgument('cameras', default_value='',
                              description="several cameras: 'front:=/topic wrist:=/topic'"),
        DeclareLaunchArgument('image_transport', default_value='',
                              description='empty = each camera as the model was trained | raw | '
                                          'compressed (subscribes <topic>/compressed) | per '
                                          'camera: front:raw,wrist:compressed'),
        DeclareLaunchArgument('input_qos', default_value='auto',
                              description='auto (reliable when every publisher is) | '
                                          'sensor_data (best effort) | reliable'),
        DeclareLaunchArgument('joint_states', default_value='joint_states',
                              description='joint state topic'),
        DeclareLaunchArgument('features', default_value='features',
                              description='features topic of a features-in model'),
        DeclareLaunchArgument('outputs', default_value='',
                              description="output group topics: 'arm:=/arm_controller/"
                                          "joint_trajectory gripper:=/...'"),
        DeclareLaunchArgument('autostart', default_value='true',
                              description='configure and activate by itself (false: wait for '
                                          'a lifecycle manager)'),
        DeclareLaunchArgument('fastdds_profile',
                              default_value=os.path.join(share, 'config',
                                                         'fastdds_large_frames.xml'),
                              description='FASTDDS_DEFAULT_PROFILES_FILE of the node; none = '
                                          'Fast DDS defaults'),
        DeclareLaunchArgument('log_level', default_value='info', description='ROS log level'),
        DeclareLaunchArgument('enclave', default_value='',
                              description='SROS2 enclave of the node (e.g. /aura_ros/aura); '
                                          'empty = none'),
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=_node)])
