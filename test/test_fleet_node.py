"""One aura_node serving three robots over real DDS (the `robots` parameter).

Each robot has the single-robot interface under its name; its chunks are computed from its own
frames (checked against a one-robot runtime fed the same frames); a reset of one leaves the other
two rows bit-identical; a bad frame on one is rejected for it alone; /diagnostics has one status
per robot besides the process's; the fleet changes by a lifecycle reconfigure (deactivate,
cleanup, set `robots`, configure, activate), each robot resuming its own snapshot.
"""

import time

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy', reason='rclpy not installed (pip install .[ros])')

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from aura_ros.ros.node import AuraNode  # noqa: E402
from aura_ros.ros.params import ParameterError  # noqa: E402
from aura_ros.ros.trajectory import answers, time_ns  # noqa: E402
from aura_ros.runtime import AuraRuntime  # noqa: E402

ROBOTS = ('arm1', 'arm2', 'arm3')
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def image_msg(pixels, stamp, encoding='rgb8'):
    msg = Image(height=pixels.shape[0], width=pixels.shape[1], encoding=encoding,
                step=pixels.shape[1] * 3)
    msg.data = pixels.tobytes()
    msg.header.stamp = stamp
    return msg


class FleetRig:
    """The fleet node under test and, per robot, a client that feeds it and records its outputs."""

    def __init__(self, make_node, executor, wait_for, model_dir, state_file='', engine='torch',
                 served=ROBOTS):
        overrides = [Parameter('model_dir', value=str(model_dir)),
                     Parameter('memory_engine', value=engine),
                     Parameter('robots', value=list(served)),
                     Parameter('input_qos', value='reliable'),
                     Parameter('diagnostics_period_s', value=0.2),
                     Parameter('state_file', value=state_file)]
        self.node = AuraNode(context=executor.context, parameter_overrides=overrides)
        executor.add_node(self.node)
        self.executor, self.wait_for = executor, wait_for
        self.client = make_node('aura_fleet_client')
        c = self.client
        self.images = {r: c.create_publisher(Image, f'/{r}/image', RELIABLE) for r in ROBOTS}
        self.joints = {r: c.create_publisher(JointState, f'/{r}/joint_states', RELIABLE)
                       for r in ROBOTS}
        self.chunks = {r: [] for r in ROBOTS}
        for r in ROBOTS:
            c.create_subscription(JointTrajectory, f'/{r}/aura/action_chunk',
                                  self.chunks[r].append, 10)
        self.resets = {r: c.create_client(Trigger, f'/{r}/aura/reset') for r in ROBOTS}
        self.health = []
        c.create_subscription(DiagnosticArray, '/diagnostics', self.health.append, 10)
        self.wait_for(lambda: all(self.images[r].get_subscription_count() > 0
                                  and self.joints[r].get_subscription_count() > 0
                                  and c.count_publishers(f'/{r}/aura/action_chunk') > 0
                                  for r in served), 10, executor, 'discovery')

    def robot(self, name):
        return next(robot for robot in self.node.robots if robot.name == name)

    def send(self, frames: dict, joints: dict, encoding='rgb8') -> dict:
        """Each robot's joint state, then its frame; wait until the node has taken them all.
        {robot: observation stamp in ns}."""
        for name, positions in joints.items():
            msg = JointState(name=['shoulder', 'elbow'], position=list(positions))
            msg.header.stamp = self.client.get_clock().now().to_msg()
            self.joints[name].publish(msg)
        self.wait_for(lambda: all(self.robot(n).joints is not None and np.allclose(
            self.robot(n).joints[0], joints[n]) for n in joints), 5, self.executor, 'joints')
        stamps, before = {}, {n: self.robot(n).counters.received for n in frames}
        for name, pixels in frames.items():
            stamp = self.client.get_clock().now().to_msg()
            stamps[name] = time_ns(stamp)
            self.images[name].publish(image_msg(pixels, stamp, encoding.get(name, 'rgb8')
                                                if isinstance(encoding, dict) else encoding))
        self.wait_for(lambda: all(self.robot(n).counters.received > before[n] for n in frames),
                      5, self.executor, 'frames received')
        return stamps

    def reset(self, name):
        future = self.resets[name].call_async(Trigger.Request())
        self.wait_for(future.done, 10, self.executor, 'reset response')
        return future.result()

    def close(self):
        self.executor.remove_node(self.node)
        self.node.stop()
        self.node.destroy_node()


@pytest.fixture(params=['torch', 'onnx'])
def rig(request, make_node, executor, wait_for, tiny_model_dir, isolated_export_cache):
    """The fleet node on each memory engine (the exported ONNX step has a free batch)."""
    rig = FleetRig(make_node, executor, wait_for, tiny_model_dir, engine=request.param)
    yield rig
    rig.close()


def row(rig, name):
    return {k: np.array(v, copy=True)
            for k, v in rig.node.runtime.state_dict(rig.robot(name).row).items()}


def same(a, b):
    return all(np.array_equal(a[k], b[k]) for k in a)


def check_chunk(msg, stamp_ns, expected, period_s):
    """The chunk answers its robot's observation and holds the reference's targets."""
    index = answers(msg, stamp_ns, period_s)
    assert index is not None, "the chunk does not answer this robot's observation"
    np.testing.assert_allclose([p.positions for p in msg.points], expected[index:],
                               rtol=1e-5, atol=1e-5)


def test_three_robots_one_node(rig, tiny_model_dir):
    rng = np.random.default_rng(0)
    refs = {r: AuraRuntime.from_model_dir(tiny_model_dir, device='cpu') for r in ROBOTS}
    period = refs['arm1'].spec.action_period_s
    assert rig.node.runtime.robots == 3
    assert rig.node.runtime.memory.name == rig.node.params.memory_engine
    assert rig.node.runtime.memory_bytes() == 3 * refs['arm1'].memory_bytes()

    def round_(robots, bad=()):
        frames = {r: rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for r in robots}
        joints = {r: rng.normal(scale=0.3, size=2) for r in robots}
        counts = {r: len(rig.chunks[r]) for r in robots}
        stamps = rig.send(frames, joints, {r: ('yuyv' if r in bad else 'rgb8') for r in robots})
        good = [r for r in robots if r not in bad]
        rig.wait_for(lambda: all(len(rig.chunks[r]) > counts[r] for r in good), 10,
                     rig.executor, 'chunks')
        for r in good:
            expected = refs[r].step(frames[r], 'rgb8', joints[r]).targets['action_chunk']
            check_chunk(rig.chunks[r][-1], stamps[r], expected, period)
        return good

    for _ in range(3):                               # all three, stepped as they come
        round_(ROBOTS)
    round_(('arm1', 'arm3'))                         # arm2 sends nothing: its row rests
    for r in ROBOTS:
        np.testing.assert_allclose(row(rig, r)['W'], refs[r].state_dict()['W'], atol=1e-5)
    assert [rig.node.runtime.counters[i].steps for i in range(3)] == [4, 3, 4]

    # a reset of arm2 zeroes its row and leaves the other two bit-identical
    before = {r: row(rig, r) for r in ROBOTS}
    response = rig.reset('arm2')
    assert response.success and response.message.startswith('arm2: memory reset'), response
    refs['arm2'].reset()
    assert same(before['arm1'], row(rig, 'arm1')) and same(before['arm3'], row(rig, 'arm3'))
    assert not row(rig, 'arm2')['W'].any() and rig.node.runtime.counters[1].steps == 0

    # a bad frame on arm3 is rejected for arm3 alone: its row untouched, the others stepped
    before = row(rig, 'arm3')
    round_(ROBOTS, bad=('arm3',))
    rig.wait_for(lambda: rig.robot('arm3').counters.rejected['encoding'] == 1, 5,
                 rig.executor, 'arm3 rejection')
    assert same(before, row(rig, 'arm3'))
    assert sum(rig.robot('arm1').counters.rejected.values()) == 0
    assert sum(rig.robot('arm2').counters.rejected.values()) == 0
    assert [rig.node.runtime.counters[i].steps for i in range(3)] == [5, 1, 4]

    # /diagnostics: the process, then one status per robot with its own counters
    count = len(rig.health)     # the next message may have been made before the last step:
    rig.wait_for(lambda: len(rig.health) > count + 1, 5, rig.executor, 'diagnostics')  # 2nd
    statuses = {s.name.rsplit(' ', 1)[-1]: {kv.key: kv.value for kv in s.values}
                for s in rig.health[-1].status}
    assert set(ROBOTS) <= set(statuses), list(statuses)
    assert statuses['arm3']['rejected_encoding'] == '1'
    assert 'rejected_encoding' not in statuses['arm1']
    assert [statuses[r]['steps'] for r in ROBOTS] == ['5', '1', '4']


def test_robot_names_are_checked(make_node, executor, tiny_model_dir):
    for robots, match in ((['arm1', 'arm1'], 'twice'), (['1arm'], 'not robot names')):
        with pytest.raises(ParameterError, match=match):
            AuraNode(context=executor.context, parameter_overrides=[
                Parameter('model_dir', value=str(tiny_model_dir)),
                Parameter('robots', value=robots)])


def test_each_robot_resumes_its_own_state_file(make_node, executor, wait_for, tiny_model_dir,
                                               tmp_path):
    state = tmp_path / 'state.safetensors'
    rig = FleetRig(make_node, executor, wait_for, tiny_model_dir, str(state))
    try:
        rng = np.random.default_rng(1)
        for _ in range(3):
            counts = {r: len(rig.chunks[r]) for r in ROBOTS}
            rig.send({r: rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for r in ROBOTS},
                     {r: rng.normal(scale=0.3, size=2) for r in ROBOTS})
            rig.wait_for(lambda: all(len(rig.chunks[r]) > counts[r] for r in ROBOTS), 10,  # noqa: B023
                         executor, 'chunks')
        saved = {r: row(rig, r) for r in ROBOTS}
    finally:
        rig.close()
    files = {r: tmp_path / f'state.{r}.safetensors' for r in ROBOTS}
    assert all(f.exists() for f in files.values())
    files['arm2'].write_bytes(files['arm2'].read_bytes()[:-8] + b'\0' * 8)   # corrupt one
    time.sleep(0.1)
    again = FleetRig(make_node, executor, wait_for, tiny_model_dir, str(state))
    try:
        assert same(saved['arm1'], row(again, 'arm1')) and same(saved['arm3'], row(again, 'arm3'))
        assert not row(again, 'arm2')['W'].any()
        assert again.node.runtime.counters[0].steps == 3
        assert again.node.robot_health(again.robot('arm2'))['crash_resume'] == 'on'
    finally:
        again.close()


def test_the_fleet_file_remaps_each_robots_topics(make_node, executor, wait_for,
                                                  tiny_model_dir):
    """config/fleet.yaml's rules, given to the node as remaps: arm2's camera, joints and chunk
    live on the topics the file names for arm2."""
    from pathlib import Path

    from aura_ros.ros.fleet_file import fleet_remappings, load_fleet

    fleet = load_fleet(Path(__file__).resolve().parents[1] / 'config' / 'fleet.yaml')
    assert list(fleet) == ['arm1', 'arm2', 'arm3']
    rules = fleet_remappings(fleet, 'aura', 'raw')
    assert ('arm2/image', '/arm2/camera/image_raw') in rules
    node = AuraNode(context=executor.context, cli_args=[
        '--ros-args', *[arg for a, b in rules for arg in ('-r', f'{a}:={b}')]],
        parameter_overrides=[Parameter('model_dir', value=str(tiny_model_dir)),
                             Parameter('robots', value=list(fleet)),
                             Parameter('input_qos', value='reliable')])
    executor.add_node(node)
    try:
        client = make_node('aura_fleet_file_client')
        image = client.create_publisher(Image, '/arm2/camera/image_raw', RELIABLE)
        joints = client.create_publisher(JointState, '/arm2/joint_states', RELIABLE)
        chunks = []
        client.create_subscription(JointTrajectory, '/arm2/arm_controller/joint_trajectory',
                                   chunks.append, 10)
        wait_for(lambda: image.get_subscription_count() and joints.get_subscription_count()
                 and client.count_publishers('/arm2/arm_controller/joint_trajectory'), 10,
                 executor, 'discovery')
        msg = JointState(name=['shoulder', 'elbow'], position=[0.1, 0.2])
        msg.header.stamp = client.get_clock().now().to_msg()
        joints.publish(msg)
        wait_for(lambda: node.robots[1].joints is not None, 5, executor, 'joints')
        image.publish(image_msg(np.zeros((24, 32, 3), np.uint8),
                                client.get_clock().now().to_msg()))
        wait_for(lambda: chunks, 10, executor, "arm2's chunk on its controller topic")
        assert [node.runtime.counters[i].steps for i in range(3)] == [0, 1, 0]
    finally:
        executor.remove_node(node)
        node.stop()
        node.destroy_node()


def test_a_bad_fleet_file_names_the_robot_and_key(tmp_path):
    from aura_ros.ros.fleet_file import FleetFileError, load_fleet

    path = tmp_path / 'fleet.yaml'
    for text, match in (('robots: {arm1: {camera: /x}}', r'robots.arm1: unknown key'),
                        ('robots: {arm1: {outputs: /x}}', r'robots.arm1.outputs must map'),
                        ('arms: [a]', 'expected a mapping')):
        path.write_text(text)
        with pytest.raises(FleetFileError, match=match):
            load_fleet(path)


def test_the_fleet_changes_by_a_lifecycle_reconfigure(make_node, executor, wait_for,
                                                       tiny_model_dir, tmp_path):
    """[arm1, arm2] step; `robots` is refused while active; deactivate + cleanup (every robot's
    snapshot saved), robots := [arm2, arm3], configure + activate (over the node's lifecycle
    and parameter services, as `ros2 lifecycle set` and `ros2 param set` do): arm3 has its topics
    and reset service and starts empty, arm1's service is gone, arm2 resumed bit-identical."""
    rig = FleetRig(make_node, executor, wait_for, tiny_model_dir,
                   str(tmp_path / 'state.safetensors'), served=('arm1', 'arm2'))
    try:
        c, node, rng = rig.client, rig.node, np.random.default_rng(2)
        change = c.create_client(ChangeState, '/aura/change_state')
        set_params = c.create_client(SetParameters, '/aura/set_parameters')

        def call(client, request):
            wait_for(client.service_is_ready, 10, executor, 'service')
            future = client.call_async(request)
            wait_for(future.done, 15, executor, 'service response')
            return future.result()

        def transition(id_):
            assert call(change, ChangeState.Request(transition=Transition(id=id_))).success

        def set_robots(names):
            return call(set_params, SetParameters.Request(parameters=[
                Parameter('robots', value=names).to_parameter_msg()])).results[0]

        def step(robots):
            frames = {r: rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for r in robots}
            joints = {r: rng.normal(scale=0.3, size=2) for r in robots}
            counts = {r: len(rig.chunks[r]) for r in robots}
            stamps = rig.send(frames, joints)
            wait_for(lambda: all(len(rig.chunks[r]) > counts[r] for r in robots), 10,
                     executor, 'chunks')
            return frames, joints, stamps

        def served():                                    # the node's services, seen over DDS
            return dict(c.get_service_names_and_types_by_node('aura', '/'))

        wait_for(lambda: '/arm1/aura/reset' in served() and '/arm3/aura/reset' not in served(),
                 10, executor, "arm1's reset service")
        for _ in range(3):
            step(('arm1', 'arm2'))
        arm2 = row(rig, 'arm2')

        # refused while active, with the reason and the way; nothing changes
        result = set_robots(['arm2', 'arm3'])
        assert not result.successful
        assert 'unconfigured (it is active)' in result.reason, result.reason
        assert 'deactivate and cleanup first' in result.reason, result.reason
        assert node.get_parameter('robots').value == ['arm1', 'arm2']
        assert [r.name for r in node.robots] == ['arm1', 'arm2'] and node.runtime.robots == 2
        transition(Transition.TRANSITION_DEACTIVATE)
        assert 'unconfigured (it is inactive)' in set_robots(['arm2', 'arm3']).reason

        transition(Transition.TRANSITION_CLEANUP)       # saves every robot's snapshot
        assert (tmp_path / 'state.arm1.safetensors').exists()
        assert (tmp_path / 'state.arm2.safetensors').exists()
        bad = set_robots(['arm2', 'arm2'])
        assert not bad.successful and 'names a robot twice' in bad.reason, bad.reason
        assert set_robots(['arm2', 'arm3']).successful
        transition(Transition.TRANSITION_CONFIGURE)
        transition(Transition.TRANSITION_ACTIVATE)

        assert [(r.name, r.row) for r in node.robots] == [('arm2', 0), ('arm3', 1)]
        assert node.runtime.robots == 2 and node.params.robots == ('arm2', 'arm3')
        assert same(arm2, row(rig, 'arm2'))              # resumed bit-identical
        assert node.runtime.counters[0].steps == 3
        assert not row(rig, 'arm3')['W'].any() and node.runtime.counters[1].steps == 0
        wait_for(lambda: '/arm1/aura/reset' not in served() and '/arm3/aura/reset' in served(),
                 10, executor, "arm1's reset service gone, arm3's there")
        wait_for(lambda: rig.images['arm1'].get_subscription_count() == 0
                 and rig.images['arm3'].get_subscription_count() > 0
                 and c.count_publishers('/arm3/aura/action_chunk') > 0, 10, executor,
                 "arm1's inputs gone, arm3's topics there")

        # arm3 steps from an empty memory on its own topics; a reset of it leaves arm2 alone
        ref = AuraRuntime.from_model_dir(tiny_model_dir, device='cpu')
        frames, joints, stamps = step(('arm2', 'arm3'))
        expected = ref.step(frames['arm3'], 'rgb8', joints['arm3']).targets['action_chunk']
        check_chunk(rig.chunks['arm3'][-1], stamps['arm3'], expected, ref.spec.action_period_s)
        arm2 = row(rig, 'arm2')
        response = rig.reset('arm3')
        assert response.success and response.message.startswith('arm3: memory reset'), response
        assert same(arm2, row(rig, 'arm2')) and not row(rig, 'arm3')['W'].any()
    finally:
        rig.close()


def test_a_single_robot_node_becomes_a_fleet_at_configure(executor, wait_for, tiny_model_dir):
    """No `robots` (one robot, ~/reset) -> cleanup, robots := [arm1, arm2], configure: the
    unnamed robot's /aura/reset is gone, each arm has its own, the state has two rows."""
    node = AuraNode(context=executor.context, parameter_overrides=[
        Parameter('model_dir', value=str(tiny_model_dir))])
    executor.add_node(node)
    try:
        def services():
            return dict(node.get_service_names_and_types_by_node('aura', '/'))

        assert node.runtime.robots == 1 and '/aura/reset' in services()
        refused = node.set_parameters([Parameter('robots', value=['arm1', 'arm2'])])[0]
        assert not refused.successful and 'unconfigured (it is active)' in refused.reason
        node.trigger_deactivate()
        node.trigger_cleanup()
        assert node.set_parameters([Parameter('robots', value=['arm1', 'arm2'])])[0].successful
        node.trigger_configure()
        assert [r.name for r in node.robots] == ['arm1', 'arm2'] and node.runtime.robots == 2
        wait_for(lambda: '/aura/reset' not in services() and '/arm1/aura/reset' in services()
                 and '/arm2/aura/reset' in services(), 10, executor, 'the reset services')
    finally:
        executor.remove_node(node)
        node.stop()
        node.destroy_node()
