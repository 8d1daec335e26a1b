"""The launch file and the parameter file agree with the node they start.

`launch`/`launch_ros` cannot be installed from PyPI here, so without them the launch file is
checked by reading its syntax tree (package, executable, node name, arguments, remaps, parameter
file); with them it is also loaded and its description inspected.
"""

import ast
import importlib.util
import os
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / 'launch' / 'aura.launch.py'
ARGUMENTS = {'params_file', 'namespace', 'model_dir', 'device', 'image', 'joint_states',
             'log_level', 'enclave', 'cameras', 'image_transport', 'input_qos', 'features',
             'outputs', 'autostart', 'fastdds_profile'}


def _calls(tree, name):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, 'id', getattr(n.func, 'attr', None)) == name]


def test_launch_file_starts_aura_node_with_its_arguments():
    tree = ast.parse(LAUNCH.read_text())
    (node,) = _calls(tree, 'Node')
    kwargs = {k.arg: k.value for k in node.keywords}
    assert ast.literal_eval(kwargs['package']) == 'aura_ros'
    assert ast.literal_eval(kwargs['executable']) == 'aura_node'
    assert ast.literal_eval(kwargs['name']) == 'aura'
    declared = {ast.literal_eval(c.args[0]) for c in _calls(tree, 'DeclareLaunchArgument')}
    assert declared == ARGUMENTS
    used = {c.args[0].value for c in _calls(tree, 'LaunchConfiguration')
            if isinstance(c.args[0], ast.Constant)}
    (node_fn,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == '_node']
    (performed,) = [n for n in ast.walk(node_fn) if isinstance(n, ast.DictComp)]
    used |= set(ast.literal_eval(performed.generators[0].iter))   # the arguments _node performs
    assert used == ARGUMENTS
    (call,) = _calls(kwargs['remappings'], 'remappings')
    assert [a.slice.value for a in call.args] == ['image', 'joint_states', 'features',
                                                    'cameras', 'outputs', 'image_transport']
    assert 'aura.yaml' in LAUNCH.read_text() and 'fastdds_large_frames.xml' in LAUNCH.read_text()


def test_remaps_reach_cameras_controllers_and_compressed_topics():
    tree = ast.parse(LAUNCH.read_text())
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)
                 and n.name in ('_pairs', 'remappings')]
    namespace = {}
    exec(compile(ast.Module(functions, type_ignores=[]), str(LAUNCH), 'exec'), namespace)
    remappings = namespace['remappings']
    assert remappings('image', 'joint_states', 'features', '', '', 'raw') == []
    assert remappings('/cam/image_raw', '/joint_states', 'features', '', '', 'raw') == [
        ('image', '/cam/image_raw'), ('joint_states', '/joint_states')]
    rules = remappings('image', 'joint_states', 'features',
                       'front:=/cf/image_raw, wrist:=/cw/image_raw',
                       'arm:=/arm_controller/joint_trajectory '
                       'gripper:=/gripper_controller/joint_trajectory', 'compressed')
    assert rules == [('front/image/compressed', '/cf/image_raw/compressed'),
                     ('wrist/image/compressed', '/cw/image_raw/compressed'),
                     ('~/arm', '/arm_controller/joint_trajectory'),
                     ('~/gripper', '/gripper_controller/joint_trajectory')]
    # the default (each camera as the model was trained): both forms, the node uses one
    assert remappings('image', 'joint_states', 'features', 'front:=/cf/image_raw', '', '') == [
        ('front/image', '/cf/image_raw'), ('front/image/compressed', '/cf/image_raw/compressed')]
    with pytest.raises(ValueError, match='cameras: expected name:=topic'):
        remappings('image', 'joint_states', 'features', 'front', '', 'raw')


def _launch_function(name):
    """One plain function of the launch file, compiled alone (no launch import needed)."""
    tree = ast.parse(LAUNCH.read_text())
    (fn,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name]
    namespace = {'os': os}
    exec(compile(ast.Module([fn], type_ignores=[]), str(LAUNCH), 'exec'), namespace)
    return namespace[name]


def test_fastdds_profile_none_means_fast_dds_defaults(tmp_path):
    """Stock `ros2 launch` refuses `fastdds_profile:=` (empty) and passes `"''"` on as a file
    name (a Fast DDS XML parser error): `none` works; a missing file is named at launch."""
    profile_file = _launch_function('fastdds_profile_file')
    for value in ('none', 'None', 'NONE', '', "''", '""', ' none '):
        assert profile_file(value) is None, value
    shipped = REPO / 'config' / 'fastdds_large_frames.xml'
    assert profile_file(str(shipped)) == str(shipped)
    with pytest.raises(ValueError, match=r"no such file '/nowhere/x.xml' \(fastdds_profile:=none"):
        profile_file('/nowhere/x.xml')
    tree = ast.parse(LAUNCH.read_text())
    (node_fn,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == '_node']
    assert [c.args[0].value for c in _calls(node_fn, 'UnsetEnvironmentVariable')] == \
        ['FASTDDS_DEFAULT_PROFILES_FILE']
    assert 'fastdds_profile:=none' in (REPO / 'README.md').read_text()


def test_enclave_reaches_the_node_only_when_given():
    ros_arguments = _launch_function('ros_arguments')
    assert ros_arguments('info', '') == ['--log-level', 'info']
    assert ros_arguments('debug', '/aura_ros/aura') == ['--log-level', 'debug',
                                                       '--enclave', '/aura_ros/aura']
    (node,) = _calls(ast.parse(LAUNCH.read_text()), 'Node')
    (args,) = [k.value for k in node.keywords if k.arg == 'arguments']
    assert ast.literal_eval(args.elts[0]) == '--ros-args'
    assert [c.func.id for c in _calls(args, 'ros_arguments')] == ['ros_arguments']


def test_launch_executable_is_an_entry_point_of_the_package():
    setup = (REPO / 'setup.py').read_text()
    assert "'aura_node': 'aura_ros.ros.console:aura_node'" in setup
    assert importlib.util.find_spec('aura_ros.ros.console') is not None
    assert importlib.util.find_spec('aura_ros.ros.node') is not None


@pytest.mark.skipif(importlib.util.find_spec('launch_ros') is None,
                    reason='launch/launch_ros are not installable from PyPI; the syntax-tree '
                           'test above checks the launch file instead')
def test_launch_description_loads():
    spec = importlib.util.spec_from_file_location('aura_launch', LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    names = {getattr(e, 'name', None) for e in description.entities}
    assert ARGUMENTS <= names


def test_parameter_file_matches_the_declarations():
    pytest.importorskip('rclpy', reason='rclpy not installed (pip install .[ros])')
    from aura_ros.ros.params import DECLARATIONS

    data = yaml.safe_load((REPO / 'config' / 'aura.yaml').read_text())
    (params,) = [v['ros__parameters'] for v in data.values()]
    assert set(params) == set(DECLARATIONS)
    for name, (default, _) in DECLARATIONS.items():
        assert params[name] == default, name


def test_demo_launch_starts_the_policy_and_the_so101_simulator():
    """The same two nodes, joined by the same parameters, as `python -m aura_ros demo`
    (run_loop): both take them from closed_loop's LOCKSTEP_NODE / LOCKSTEP_SIM."""
    tree = ast.parse((REPO / 'launch' / 'demo.launch.py').read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                and n.module == 'aura_ros.ros.so101.closed_loop' for a in n.names}
    assert imported == {'LOCKSTEP_NODE', 'LOCKSTEP_SIM'}
    nodes, literal, unpacked = {}, {}, {}
    for call in _calls(tree, 'Node'):
        kwargs = {k.arg: k.value for k in call.keywords}
        executable = ast.literal_eval(kwargs['executable'])
        nodes[executable] = ast.literal_eval(kwargs['name'])
        assert ast.literal_eval(kwargs['package']) == 'aura_ros'
        (given,) = [d for d in kwargs['parameters'].elts if isinstance(d, ast.Dict)]
        literal[executable] = {ast.literal_eval(k) for k in given.keys if k is not None}
        unpacked[executable] = [v.id for k, v in zip(given.keys, given.values, strict=True)
                                if k is None]
    assert nodes == {'aura_node': 'aura', 'aura_so101_sim': 'so101_sim'}
    assert unpacked == {'aura_node': ['LOCKSTEP_NODE'], 'aura_so101_sim': ['LOCKSTEP_SIM']}
    setup = (REPO / 'setup.py').read_text()
    assert "'aura_so101_sim': 'aura_ros.ros.console:aura_so101_sim'" in setup
    assert _calls(tree, 'OnProcessExit'), 'the demo must end when the simulator ends'
    pytest.importorskip('rclpy', reason='rclpy not installed (pip install .[ros])')
    pytest.importorskip('mujoco', reason='mujoco not installed')
    from aura_ros.ros.params import DECLARATIONS
    from aura_ros.ros.so101.closed_loop import LOCKSTEP_NODE, LOCKSTEP_SIM, ros_args
    from aura_ros.ros.so101.sim import PARAMETERS

    assert LOCKSTEP_SIM['lockstep'] is True and LOCKSTEP_SIM['wait_for_command'] is True
    assert LOCKSTEP_SIM['trajectory_topics'] == [f'/{nodes["aura_node"]}/action_chunk']
    assert LOCKSTEP_NODE['use_sim_time'] is True                 # stamps are the sim's time
    assert LOCKSTEP_NODE['input_qos'] == 'reliable'
    sim = literal['aura_so101_sim'] | set(LOCKSTEP_SIM)
    policy = literal['aura_node'] | set(LOCKSTEP_NODE)
    assert sim <= set(PARAMETERS), sim - set(PARAMETERS)         # no misspelled name
    assert policy - {'use_sim_time'} <= set(DECLARATIONS)
    assert ros_args({'lockstep': True, 'trajectory_topics': ['/a', '/b'], 'seed': 3}) == [
        '-p', 'lockstep:=true', '-p', 'trajectory_topics:=["/a", "/b"]', '-p', 'seed:=3']


def test_the_so101_world_knobs_have_one_source():
    """So101Config's defaults are the simulator's parameter defaults, the closed loop's and
    the recorder's, and the command line's (eval so101, record-demos): restated nowhere."""
    import inspect

    from aura_ros.cli import build_parser
    from aura_ros.tasks.so101_config import DEFAULT

    parser = build_parser()
    for command in (['eval', 'so101'], ['record-demos', '--out', 'x']):
        args = parser.parse_args(command)
        assert (args.pads, args.size, args.delay_max, args.distractor_prob) == (
            DEFAULT.n_pads, DEFAULT.width, DEFAULT.delay_max, DEFAULT.distractor_prob), command
    assert parser.parse_args(['record-demos', '--out', 'x']).delay_min == DEFAULT.delay_min
    pytest.importorskip('rclpy', reason='rclpy not installed (pip install .[ros])')
    pytest.importorskip('mujoco', reason='mujoco not installed')
    from aura_ros.ros.so101.closed_loop import Loop
    from aura_ros.ros.so101.record import record
    from aura_ros.ros.so101.sim import PARAMETERS

    sim = {k: v[0] for k, v in PARAMETERS.items()}
    assert (sim['frame_hz'], sim['image_width'], sim['image_height'], sim['wrist_camera'],
            sim['n_pads'], sim['delay_min'], sim['delay_max'], sim['distractor_prob']) == (
        DEFAULT.frame_hz, DEFAULT.width, DEFAULT.height, DEFAULT.wrist_camera, DEFAULT.n_pads,
        DEFAULT.delay_min, DEFAULT.delay_max, DEFAULT.distractor_prob)
    loop = {f: getattr(Loop, f) for f in ('n_pads', 'size', 'delay', 'distractor_prob')}
    assert loop == {'n_pads': DEFAULT.n_pads, 'size': DEFAULT.width,
                    'delay': (DEFAULT.delay_min, DEFAULT.delay_max),
                    'distractor_prob': DEFAULT.distractor_prob}
    given = inspect.signature(record).parameters
    assert (given['n_pads'].default, given['size'].default, given['delay'].default,
            given['distractor_prob'].default) == (DEFAULT.n_pads, DEFAULT.width,
                                                  (DEFAULT.delay_min, DEFAULT.delay_max),
                                                  DEFAULT.distractor_prob)
