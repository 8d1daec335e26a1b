"""Fuzzing a live aura_node over DDS: arbitrary images and joint states never hurt it.

Hypothesis draws every field a sender controls (sizes, row step, encodings including garbage
strings, data lengths, NaN/Inf/huge positions, joint names, stamps in the past and future).
For each drawn pair the node must: take it without crashing, count a rejection under the reason
an independent oracle predicts (or step, when the oracle says the input is good), leave the memory
state bit-identical on any rejection, and still answer a good frame afterwards. The examples are
derandomised (reproducible in CI) and bounded (~150, well under a minute).
"""

import math
import time

import numpy as np
import pytest

pytest.importorskip('rclpy', reason='rclpy not installed (pip install .[ros])')
hypothesis = pytest.importorskip('hypothesis')

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from test_node import FRAMES, Rig, gate_values  # noqa: E402

from aura_ros.ros.conversions import CHANNELS  # noqa: E402

MAX_EXAMPLES = 150
MAX_AGE = 0.5                                     # the node's max_obs_age_s default
JOINTS = ('shoulder', 'elbow')
# reasons the node may give; 'step_failed' (an unexpected exception) is never acceptable
KNOWN = {'encoding', 'empty', 'size', 'shape', 'dtype', 'stale_image', 'future_image',
         'out_of_order', 'no_joints', 'stale_joints', 'malformed_joints', 'missing_joints',
         'nonfinite_joints', 'joint_count', 'nonfinite_features'}

texts = st.text(st.characters(blacklist_categories=('Cs',), blacklist_characters='\x00'),
                max_size=12)
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from([0.0, 0.5, -1.0, 1e300, -1e39, math.nan, math.inf]))
# stamp offsets from now, far from the 0.5 s limits so timing cannot flip the verdict
offsets = st.sampled_from([0.0] * 6 + [-0.2, -30.0, 30.0, -1e6, None])
# a good joint state, drawn often so that most images reach the image checks
GOOD_JOINTS = dict(names=['elbow', 'shoulder'], positions=[0.1, -0.2], velocity=[], offset=0.0)


@st.composite
def images(draw):
    valid = st.sampled_from(sorted(CHANNELS))
    encoding = draw(st.one_of(valid, valid, valid, st.sampled_from(
        ['yuv422', '16UC1', 'RGB8', 'rgb16', '', 'bayer_rggb8']), texts))
    kind = draw(st.sampled_from(['exact', 'exact', 'padded', 'random', 'huge']))
    channels = CHANNELS.get(encoding, 3)
    if kind == 'huge':
        height = draw(st.integers(0, 2**32 - 1))
        width = draw(st.integers(0, 2**32 - 1))
        step = draw(st.integers(0, 2**32 - 1))
        data = draw(st.binary(max_size=64))
    else:
        height, width = draw(st.integers(0, 48)), draw(st.integers(0, 48))
        step = width * channels + (draw(st.integers(0, 5)) if kind == 'padded' else 0)
        if kind == 'random':
            step = draw(st.integers(0, 300))
            data = draw(st.binary(max_size=3000))
        else:
            data = draw(st.binary(min_size=step * height, max_size=step * height))
    return dict(encoding=encoding, height=height, width=width, step=step, data=data,
                is_bigendian=draw(st.integers(0, 1)), offset=draw(offsets))


@st.composite
def joint_states(draw):
    names = draw(st.lists(st.one_of(st.sampled_from([*JOINTS, 'gripper', '']), texts),
                          max_size=5))
    n = len(names) if draw(st.booleans()) else draw(st.integers(0, 6))
    return dict(names=names, positions=draw(st.lists(floats, min_size=n, max_size=n)),
                velocity=draw(st.lists(floats, max_size=3)), offset=draw(offsets))


def stamp_from(rig, offset):
    now = rig.client.get_clock().now().nanoseconds
    if offset is None:                             # the epoch: far in the past
        return 0, 0
    total = now + int(offset * 1e9)
    return total // 10**9, total % 10**9


def joint_verdict(js):
    """The node's expected reason for a joint state, or None when it is kept."""
    if len(js['positions']) != len(js['names']):
        return 'malformed_joints'
    index = {name: i for i, name in enumerate(js['names'])}
    if any(name not in index for name in JOINTS):
        return 'missing_joints'
    if not all(math.isfinite(js['positions'][index[n]]) for n in JOINTS):
        return 'nonfinite_joints'
    return None


def image_verdict(img, stamp, last_stamp, joints, now):
    """The expected reason for an image given the node's last stamp and kept joints."""
    t = stamp[0] + stamp[1] * 1e-9
    if now - t > MAX_AGE:
        return 'stale_image'
    if t - now > MAX_AGE:
        return 'future_image'
    if t <= last_stamp:
        return 'out_of_order'
    if joints is None:
        return 'no_joints'
    positions, joint_stamp = joints
    if t - joint_stamp > MAX_AGE:
        return 'stale_joints'
    if img['encoding'] not in CHANNELS:
        return 'encoding'
    if img['height'] == 0 or img['width'] == 0 or not img['data']:
        return 'empty'
    row = img['width'] * CHANNELS[img['encoding']]
    if img['step'] < row or len(img['data']) != img['step'] * img['height']:
        return 'size'
    with np.errstate(over='ignore'):
        if not np.isfinite(np.asarray(positions, np.float32)).all():
            return 'nonfinite_joints'               # finite in float64, inf in float32
    return None


def test_fuzzed_inputs_never_crash_never_touch_the_state_and_are_counted(
        make_node, executor, wait_for, tiny_model_dir):
    rig = Rig(make_node, executor, wait_for, tiny_model_dir)
    node = rig.node
    tried = {'cases': 0, 'stepped': 0}
    try:
        rig.step(FRAMES[0])

        @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(img=images(), js=st.one_of(st.just(GOOD_JOINTS), joint_states(), st.none()))
        def case(img, js):
            tried['cases'] += 1
            state = rig.state()
            if js is not None:
                msg = JointState(name=js['names'], position=js['positions'],
                                 velocity=js['velocity'])
                msg.header.stamp.sec, msg.header.stamp.nanosec = stamp_from(rig, js['offset'])
                before, kept = sum(node.rejected.values()), node._joints
                rig.joint_pub.publish(msg)
                wait_for(lambda: node._joints is not kept
                         or sum(node.rejected.values()) > before, 5, executor, 'joint state')
                reason = joint_verdict(js)
                if reason is None:
                    assert node._joints is not kept and sum(node.rejected.values()) == before
                else:
                    assert node.rejected[reason] >= 1 and node._joints is kept
            counts, steps = dict(node.rejected), node.runtime.steps
            msg = Image(height=img['height'], width=img['width'], encoding=img['encoding'],
                        step=img['step'], is_bigendian=img['is_bigendian'], data=img['data'])
            msg.header.stamp.sec, msg.header.stamp.nanosec = stamp_from(rig, img['offset'])
            expected = image_verdict(img, (msg.header.stamp.sec, msg.header.stamp.nanosec),
                                     node._last_stamp, node._joints,
                                     rig.client.get_clock().now().nanoseconds * 1e-9)
            received = node.received
            rig.image_pub.publish(msg)
            wait_for(lambda: node.received > received, 5, executor, 'image received')
            wait_for(lambda: node.runtime.steps + sum(node.rejected.values())
                     > steps + sum(counts.values()), 10, executor, 'image handled')
            new = {k: v - counts.get(k, 0) for k, v in node.rejected.items()
                   if v != counts.get(k, 0)}
            assert set(node.rejected) <= KNOWN, dict(node.rejected)
            if expected is None:
                assert node.runtime.steps == steps + 1 and not new, new
                tried['stepped'] += 1
            else:
                assert new == {expected: 1}, (expected, new)
                assert node.runtime.steps == steps
                for key, value in rig.state().items():
                    assert np.array_equal(value, state[key]), key
            if tried['cases'] % 25 == 0:               # still answers a good frame
                rig.step(FRAMES[tried['cases'] // 25 % len(FRAMES)])

        started = time.monotonic()
        case()
        elapsed = time.monotonic() - started
        chunk, gate = rig.step(FRAMES[1])                  # alive at the end
        assert len(chunk.points) == 3 - int(gate_values(gate)['first_point'])   # past: left out
        assert int(gate_values(gate)['step']) == node.runtime.steps
        assert tried['cases'] >= MAX_EXAMPLES and tried['stepped'] > 0
        assert sum(node.rejected.values()) > 0 and 'step_failed' not in node.rejected
        print(f'fuzz: {tried["cases"]} cases in {elapsed:.1f} s, {tried["stepped"]} stepped, '
              f'rejections {dict(node.rejected)}')
    finally:
        rig.close()


def test_a_frame_stamped_in_the_future_is_rejected_and_blocks_nothing(
        make_node, executor, wait_for, tiny_model_dir):
    """Clock skew: accepted, a future stamp would make every later frame 'out_of_order'."""
    rig = Rig(make_node, executor, wait_for, tiny_model_dir)
    try:
        rig.step(FRAMES[0])
        future = rig.now()
        future.sec += 3600
        rig.send(FRAMES[1], stamp=future)
        rig.settle()
        assert rig.node.rejected['future_image'] == 1
        for pixels in FRAMES[2:4]:
            rig.step(pixels)
        assert rig.node.runtime.steps == 3 and 'out_of_order' not in rig.node.rejected
    finally:
        rig.close()
