"""The node's parameters: declared with descriptions and ranges, validated once at start.

A bad value raises `ParameterError` naming the parameter and what it accepts, so `aura_node`
stops at start instead of failing on the first frame. Every path parameter expands `~`. A float
parameter also takes an integer (`-p gate_threshold:=1`, `ros2 param set ... 1`), as a user
would expect; rclpy itself would refuse it as the wrong type.
"""

import os
import re
from copy import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.exceptions import ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

from aura_ros.ros.inputs import parse_transports
from aura_ros.runtime.runtime import check_threshold

DEVICES = ('auto', 'cpu', 'cuda')
ENGINES = ('torch', 'onnx')
INPUT_QOS = ('auto', 'sensor_data', 'reliable')
IMAGE_TRANSPORTS = ('raw', 'compressed')
MODEL_THRESHOLD = -1.0        # gate_threshold's default: the model's own (model.yaml)


class ParameterError(ValueError):
    """A parameter value the node cannot run with."""


BUNDLED_MODEL = 'so101'       # models/so101: the SO-101 world's model (docs/so101.md)


def bundled_model_dir() -> str:
    """The bundled model: share/aura_ros/models/so101, else the one in the source tree."""
    try:
        from ament_index_python.packages import get_package_share_directory
        shared = Path(get_package_share_directory('aura_ros')) / 'models' / BUNDLED_MODEL
        if shared.is_dir():
            return str(shared)
    except (ImportError, LookupError, ValueError, OSError):   # no ament index: source tree
        pass
    return str(Path(__file__).resolve().parents[2] / 'models' / BUNDLED_MODEL)


@dataclass(frozen=True)
class NodeParams:
    model_dir: str
    device: str
    memory_engine: str
    gate_threshold: float
    input_qos: str
    input_depth: int
    max_obs_age_s: float
    state_file: str
    diagnostics_period_s: float
    frame_id: str
    inference_threads: int
    health_window_s: float
    image_transport: str
    camera_max_skew_s: float
    input_timeout_s: float
    chunk_min_lead_s: float
    max_frame_pixels: int
    autostart: bool
    gate_image_steps: int
    gate_image_rate_hz: float
    gate_image_thumbnails: int
    robots: tuple[str, ...] = ()

    def qos(self) -> QoSProfile:
        """The input QoS at input_depth: ROS's sensor-data profile (best effort, volatile), or
        the same but reliable. For auto the sensor-data one, whose reliability the node then
        sets per topic to what the publishers offer (aura_ros/ros/adaptive_qos.py)."""
        profile = copy(qos_profile_sensor_data)
        profile.depth = self.input_depth
        if self.input_qos == 'reliable':
            profile.reliability = ReliabilityPolicy.RELIABLE
        return profile


def _describe(text: str, kind: int, read_only: bool = True, **ranges) -> ParameterDescriptor:
    descriptor = ParameterDescriptor(description=text, type=kind, read_only=read_only)
    if 'floats' in ranges:
        low, high = ranges['floats']
        descriptor.floating_point_range = [FloatingPointRange(from_value=low, to_value=high)]
    if 'ints' in ranges:
        low, high = ranges['ints']
        descriptor.integer_range = [IntegerRange(from_value=low, to_value=high, step=1)]
    return descriptor


STRING, DOUBLE, INTEGER, BOOL = (ParameterType.PARAMETER_STRING, ParameterType.PARAMETER_DOUBLE,
                                 ParameterType.PARAMETER_INTEGER, ParameterType.PARAMETER_BOOL)

DECLARATIONS = {
    'model_dir': ('', _describe('model directory (model.yaml, backbone.onnx, memory.safetensors); '
                                'empty = the bundled SO-101 model', STRING)),
    'device': ('auto', _describe(f'inference device: {"|".join(DEVICES)} '
                                 '(auto = cuda when usable)', STRING)),
    'memory_engine': ('torch', _describe(f'memory step engine: {"|".join(ENGINES)}', STRING)),
    'gate_threshold': (MODEL_THRESHOLD, _describe(
        'write when the gate probability exceeds this; negative (the default) = the threshold '
        'the trainer selected (model.yaml memory.gate_threshold); may change at run time',
        DOUBLE, read_only=False, floats=(MODEL_THRESHOLD, 1.0))),
    'input_qos': ('auto', _describe(f'reliability of the inputs (cameras, joint_states, '
                                    f'features): {"|".join(INPUT_QOS)}; auto = reliable when '
                                    'every publisher of the topic is reliable, else best '
                                    'effort, re-checked when publishers change; sensor_data = '
                                    'best effort', STRING)),
    'input_depth': (1, _describe('queue depth of the input subscriptions', INTEGER,
                                 ints=(1, 100))),
    'max_obs_age_s': (0.5, _describe('reject an image older than this (node clock), or whose '
                                     'latest joint state is older than this', DOUBLE,
                                     floats=(0.001, 3600.0))),
    'state_file': ('', _describe('save/resume the memory state here (empty = off)', STRING)),
    'diagnostics_period_s': (1.0, _describe('period of /diagnostics', DOUBLE,
                                            floats=(0.05, 60.0))),
    'frame_id': ('', _describe('header.frame_id of the published action chunks', STRING)),
    'inference_threads': (1, _describe('CPU threads of torch and ONNX Runtime for inference',
                                       INTEGER, ints=(1, 64))),
    'health_window_s': (10.0, _describe('/diagnostics is WARN while a rejection, drop or failure '
                                        'happened in the last this many seconds', DOUBLE,
                                        floats=(0.1, 3600.0))),
    'image_transport': ('', _describe(f'camera frames: empty (default) = each camera as the '
                                      f'model was trained (model.yaml cameras[].transport); '
                                      f'{"|".join(IMAGE_TRANSPORTS)} = every camera so; or per '
                                      'camera, e.g. "front:raw,wrist:compressed" (compressed: '
                                      'sensor_msgs/CompressedImage JPEG or PNG on <image '
                                      'topic>/compressed)', STRING)),
    'camera_max_skew_s': (0.02, _describe('several cameras: a step takes one frame from each, '
                                          'their stamps at most this far apart', DOUBLE,
                                          floats=(0.0, 1.0))),
    'input_timeout_s': (3.0, _describe('warn when an input topic has publishers but no message '
                                       'for this long', DOUBLE, floats=(0.1, 3600.0))),
    'chunk_min_lead_s': (0.03, _describe('publish only chunk points at least this far ahead of '
                                         'the publish time (the trip to the controller)',
                                         DOUBLE, floats=(0.0, 1.0))),
    'max_frame_pixels': (0, _describe('refuse (too_large) a camera frame with more pixels than '
                                      "this, before decoding it; 0 = auto: 64 x the model's "
                                      'input for that camera, at least 1920 x 1080', INTEGER,
                                      ints=(0, 1 << 40))),
    'autostart': (True, _describe('configure and activate at start (false: wait for a '
                                  'lifecycle manager)', BOOL)),
    'gate_image_steps': (300, _describe('~/gate_image: steps shown in its strip chart', INTEGER,
                                        ints=(10, 100_000))),
    'gate_image_rate_hz': (5.0, _describe('~/gate_image: pictures per second, drawn only while '
                                          'it has a subscriber', DOUBLE, floats=(0.1, 30.0))),
    'gate_image_thumbnails': (4, _describe('~/gate_image: last written frames shown', INTEGER,
                                           ints=(0, 12))),
}
#: Declared apart (a string array with no default: rclpy cannot type an empty list), and not in
#: config/aura.yaml: set it to serve a fleet (config/fleet.yaml, launch/fleet.launch.py).
ROBOTS = _describe('serve several robots from this one process (a fleet): their names, e.g. '
                   '[arm1, arm2]; each robot has the single-robot topics under its name '
                   '(arm1/image, arm1/joint_states -> arm1/<node>/<group>, arm1/<node>/reset) '
                   'and its own row of one batched memory state; unset = one robot, topics as '
                   'they are; may change while the node is unconfigured (after cleanup): the '
                   'next configure serves the new list', ParameterType.PARAMETER_STRING_ARRAY,
                   read_only=False)
ROBOT_NAME = re.compile(r'[A-Za-z][A-Za-z0-9_]*')
PATHS = ('model_dir', 'state_file')
DOUBLES = tuple(name for name, (_, d) in DECLARATIONS.items() if d.type == DOUBLE)


def widen_integers(params: list[Parameter]) -> list[Parameter]:
    """An INTEGER value for a float parameter becomes that DOUBLE (rclpy's pre-set callback)."""
    return [Parameter(p.name, Parameter.Type.DOUBLE, float(p.value))
            if p.name in DOUBLES and p.type_ == Parameter.Type.INTEGER else p for p in params]


def run_time_refusal(params: list[Parameter], lifecycle_state: str = 'active') -> str:
    """Why a change at run time is refused ('' if it is not): gate_threshold may change, to a
    threshold the runtime takes or to a negative value (back to the model's own); robots only
    while the node is unconfigured (the fleet changes by a lifecycle reconfigure: its rows,
    topics and reset services are made at configure), to a list of robot names."""
    for param in params:
        if param.name == 'robots':
            if lifecycle_state != 'unconfigured':
                return (f'robots can change only while the node is unconfigured (it is '
                        f'{lifecycle_state}): deactivate and cleanup first, set robots, then '
                        "configure (each robot's state is saved at cleanup and resumed at "
                        'configure with state_file)')
            try:
                check_robots(param.value)
            except ParameterError as err:
                return str(err)
        elif param.name != 'gate_threshold':
            return f'{param.name} is read-only at run time'
    for param in (param for param in params if param.name == 'gate_threshold'):
        try:             # rclpy's range check lets 1 + 1e-6 through; the runtime would not
            if param.value >= 0:                 # negative: back to the model's own
                check_threshold(param.value)
        except ValueError as err:
            return f'gate_threshold: {err}'
    return ''


def check_device(device: str) -> None:
    """A CUDA device asked for on a machine without one: a parameter error, not a traceback."""
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise ParameterError(f"parameter 'device' is {device!r} but torch sees no CUDA device "
                             "here; available: auto, cpu")


def _widen_integer_overrides(node: Node) -> None:
    """The same at start: rclpy offers no hook before it checks an override's type, so the
    overrides (from --ros-args and parameter files) are widened in place before declaring."""
    overrides = getattr(node, '_parameter_overrides', None)
    if not isinstance(overrides, dict):         # another rclpy: integers stay refused at start
        return
    for param in widen_integers(list(overrides.values())):
        overrides[param.name] = param


def check_state_file(path: str) -> None:
    """A state_file must name a file in an existing folder (the node creates the file)."""
    if not path:
        return
    if os.path.isdir(path):
        raise ParameterError(f"parameter 'state_file': {path} is a directory; give a file path")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ParameterError(f"parameter 'state_file': its folder {folder} does not exist")


def declare_and_read(node: Node) -> NodeParams:
    """Declare every parameter (rclpy enforces types and ranges) and check the enumerations."""
    _widen_integer_overrides(node)
    for name, (default, descriptor) in DECLARATIONS.items():
        node.declare_parameter(name, default, descriptor)
    values = {name: node.get_parameter(name).value for name in DECLARATIONS}
    for name, allowed in (('device', DEVICES), ('memory_engine', ENGINES),
                          ('input_qos', INPUT_QOS)):
        if values[name] not in allowed:
            raise ParameterError(f'parameter {name!r} is {values[name]!r}; '
                                 f'allowed: {", ".join(allowed)}')
    try:        # rclpy's range check allows 1e-6 beyond [0, 1]; the runtime does not
        if values['gate_threshold'] >= 0:          # negative: the model's own
            check_threshold(values['gate_threshold'])
    except ValueError as err:
        raise ParameterError(f"parameter 'gate_threshold': {err}") from None
    try:
        parse_transports(values['image_transport'])
    except ValueError as err:
        raise ParameterError(f"parameter 'image_transport': {err}; allowed: empty (as trained), "
                             f'{", ".join(IMAGE_TRANSPORTS)} or <camera>:<transport>,...') from err
    values['model_dir'] = values['model_dir'] or bundled_model_dir()
    for name in PATHS:
        values[name] = os.path.expanduser(values[name])
    if not Path(values['model_dir']).is_dir():
        raise ParameterError(f'parameter \'model_dir\': {values["model_dir"]} is not a directory')
    check_state_file(values['state_file'])
    values['robots'] = read_robots(node)
    return NodeParams(**values)


def read_robots(node: Node) -> tuple[str, ...]:
    """The `robots` parameter: distinct names, each a valid ROS name token; () when unset."""
    return check_robots(node.declare_parameter('robots', Parameter.Type.STRING_ARRAY,
                                               ROBOTS).value)


def robots_now(node: Node) -> tuple[str, ...]:
    """The `robots` parameter's value now, () while unset (as a single robot's node has it)."""
    try:
        return tuple(node.get_parameter('robots').value or ())
    except ParameterUninitializedException:
        return ()


def check_robots(value) -> tuple[str, ...]:
    """A `robots` value as names, or ParameterError naming what is wrong with it."""
    robots = tuple(value or ())
    bad = [name for name in robots if not ROBOT_NAME.fullmatch(name)]
    if bad:
        raise ParameterError(f"parameter 'robots': {bad} are not robot names (a letter, then "
                             'letters, digits or _: each becomes a namespace)')
    if len(set(robots)) != len(robots):
        raise ParameterError(f"parameter 'robots': {list(robots)} names a robot twice")
    return robots
