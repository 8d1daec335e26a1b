"""Fuzzing a live aura_node: hypothesis strategies for its inputs, an oracle, one case's check.

Shared by the CI test (test/test_fuzz_node.py, ~150 cases) and the benchmark
(`python -m aura_ros bench fuzz`, 10^4 cases and more). The strategies draw every field a sender
controls (sizes, row step, encodings including garbage strings, data lengths, NaN/Inf/huge
positions, joint names with duplicates, stamps in the past and future). The oracle predicts, from
the message alone and the node's last stamp and kept joint state, the reason the node must give,
or None when it must step. `check_case` sends one drawn pair and checks the node against it.
A finite joint position of HUGE or more may overflow inside the model (1e25 did, issue 23): the
oracle then accepts a step or a refusal as nonfinite (OVERFLOW); that nothing non-finite is
published is checked on the outputs (fuzz_attacks.nonfinite_numbers). The other input kinds
(features, JPEG/PNG, two-camera stamps) are in fuzz_attacks.py.

Needs hypothesis (a test dependency): import this module only where hypothesis is installed.
"""

import math
from typing import Callable, Optional, Protocol

import numpy as np
from hypothesis import strategies as st
from sensor_msgs.msg import Image, JointState

from aura_ros.ros.conversions import CHANNELS

MAX_AGE = 0.5                                     # the node's max_obs_age_s default
JOINTS = ('shoulder', 'elbow')                    # the joints of the tests' tiny model
# reasons the node may give; 'step_failed' (an unexpected exception) is never acceptable
KNOWN = {'encoding', 'empty', 'size', 'shape', 'dtype', 'stale_image', 'future_image',
         'out_of_order', 'no_joints', 'stale_joints', 'malformed_joints', 'missing_joints',
         'nonfinite_joints', 'joint_count', 'nonfinite_features', 'future_joints',
         'malformed_stamp', 'nonfinite_step', 'stale_for_chunk'}
HUGE = 1e15            # |input| from which a float32 model may overflow (LayerNorm squares it)
OVERFLOW = 'step or nonfinite'
OVERFLOW_REASONS = {'nonfinite_step', 'nonfinite_features'}

texts = st.text(st.characters(blacklist_categories=('Cs',), blacklist_characters='\x00'),
                max_size=12)
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from([0.0, 0.5, -1.0, 1e300, -1e39, math.nan, math.inf,
                                    1e20, -1e25, 1e25, 3e38]))
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


any_joint_state = st.one_of(st.just(GOOD_JOINTS), joint_states(), st.none())


def stamp_from(now_ns: int, offset: Optional[float]) -> tuple[int, int]:
    """(sec, nanosec) at `offset` seconds from now; None is the epoch (far in the past)."""
    if offset is None:
        return 0, 0
    total = now_ns + int(offset * 1e9)
    return total // 10**9, total % 10**9


def joint_verdict(js: dict) -> Optional[str]:
    """The node's expected reason for a joint state, or None when it is kept."""
    if len(js['positions']) != len(js['names']):
        return 'malformed_joints'
    if len(set(js['names'])) != len(js['names']):
        return 'malformed_joints'
    index = {name: i for i, name in enumerate(js['names'])}
    if any(name not in index for name in JOINTS):
        return 'missing_joints'
    if not all(math.isfinite(js['positions'][index[n]]) for n in JOINTS):
        return 'nonfinite_joints'
    if js['offset'] is not None and js['offset'] > MAX_AGE:
        return 'future_joints'
    return None


def image_verdict(img: dict, stamp: tuple[int, int], last_stamp: float, joints, now: float):
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
        single = np.asarray(positions, np.float32)
        if not np.isfinite(single).all():
            return 'nonfinite_joints'               # finite in float64, inf in float32
    if single.size and np.abs(single).max() >= HUGE:
        return OVERFLOW
    return None


class Harness(Protocol):
    """What check_case needs: the in-process node, the client's publishers, a spinner."""

    node: object
    image_pub: object
    joint_pub: object

    def spin_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None: ...

    def now_ns(self) -> int: ...

    def state(self) -> dict: ...


LATE = 'stale_image (late)'


def check_case(h: Harness, img: dict, js: Optional[dict]) -> Optional[str]:
    """Send one (joint state, image) pair; AssertionError if the node does not do what the
    oracle says. Returns the image's expected reason (None: it was stepped).

    The oracle judges ages when the image is sent. On a heavily loaded machine an image can
    become older than max_obs_age_s before the node handles it; 'stale_image' is then the right
    answer, and it is returned as LATE instead of failing (counted apart by the benchmark).
    """
    node = h.node
    state = h.state()
    if js is not None:
        msg = JointState(name=js['names'], position=js['positions'], velocity=js['velocity'])
        msg.header.stamp.sec, msg.header.stamp.nanosec = stamp_from(h.now_ns(), js['offset'])
        before, kept = sum(node.rejected.values()), node._joints
        h.joint_pub.publish(msg)
        h.spin_until(lambda: node._joints is not kept or sum(node.rejected.values()) > before,
                     5, 'joint state')
        reason = joint_verdict(js)
        if reason is None:
            assert node._joints is not kept and sum(node.rejected.values()) == before, \
                ('joint state not kept', dict(node.rejected))
        else:
            assert node.rejected[reason] >= 1 and node._joints is kept, (reason,
                                                                          dict(node.rejected))
    counts, steps = dict(node.rejected), node.runtime.steps
    msg = Image(height=img['height'], width=img['width'], encoding=img['encoding'],
                step=img['step'], is_bigendian=img['is_bigendian'], data=img['data'])
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp_from(h.now_ns(), img['offset'])
    expected = image_verdict(img, (msg.header.stamp.sec, msg.header.stamp.nanosec),
                             node._last_stamp, node._joints, h.now_ns() * 1e-9)
    received = node.received
    h.image_pub.publish(msg)
    h.spin_until(lambda: node.received > received, 5, 'image received')
    h.spin_until(lambda: node.runtime.steps + sum(node.rejected.values())
                 > steps + sum(counts.values()), 10, 'image handled')
    new = {k: v - counts.get(k, 0) for k, v in node.rejected.items() if v != counts.get(k, 0)}
    assert set(node.rejected) <= KNOWN, dict(node.rejected)
    sent_at = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
    late = new == {'stale_image': 1} and expected != 'stale_image' \
        and h.now_ns() * 1e-9 - sent_at > MAX_AGE          # stale by the time the node took it
    if expected == OVERFLOW and not late and node.runtime.steps == steps + 1 and not new:
        return None                                 # the model took it without overflowing
    if expected is None and not late:
        assert node.runtime.steps == steps + 1 and not new, ('expected a step', new)
        return None
    if expected == OVERFLOW and not late:
        assert len(new) == 1 and set(new) <= OVERFLOW_REASONS and sum(new.values()) == 1, \
            (expected, new)
        expected = next(iter(new))
    assert late or new == {expected: 1}, (expected, new)
    assert node.runtime.steps == steps
    for key, value in h.state().items():
        assert np.array_equal(value, state[key]), ('state changed on a rejection', key)
    return LATE if late else expected


def image_msg(pixels: np.ndarray, stamp) -> Image:
    """An rgb8 Image of pixels (H x W x 3 uint8) stamped `stamp`."""
    msg = Image(height=pixels.shape[0], width=pixels.shape[1], encoding='rgb8',
                step=pixels.shape[1] * 3, data=pixels.tobytes())
    msg.header.stamp = stamp
    return msg
