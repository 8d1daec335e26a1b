"""`python -m aura_ros bench fuzz`: a long fuzzing run against a live aura_node, and a reset storm.

Not a CI test (test/test_fuzz_node.py is the short version). Phase 1 sends `--cases`
hypothesis-drawn (joint state, image) pairs (aura_ros/ros/fuzz_cases.py: strategies, oracle,
per-case check) and checks after each that the node is alive, that the memory state changed only
on accepted frames and that each rejection was counted under the reason the oracle predicted.
Phase 2 calls ~/reset `--resets` times at random moments while frames stream at `--rate` Hz and
checks every reply, the episode step counters against the replies, and the response times.
Mismatches are recorded, not raised, so one run reports all of them.
"""

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np


class BenchHarness:
    """The node under test in-process, a client node feeding it, one executor spinning both."""

    def __init__(self, context, model_dir: str):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.parameter import Parameter
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image, JointState
        from std_srvs.srv import Trigger
        from trajectory_msgs.msg import JointTrajectory

        from aura_ros.ros.node import AuraNode

        self.node = AuraNode(context=context, parameter_overrides=[
            Parameter('model_dir', value=model_dir), Parameter('device', value='cpu')])
        self.client = Node('aura_fuzz_client', context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.client)
        self.image_pub = self.client.create_publisher(Image, 'image', qos_profile_sensor_data)
        self.joint_pub = self.client.create_publisher(JointState, 'joint_states',
                                                      qos_profile_sensor_data)
        self.chunks, self.gates = [], []
        self.client.create_subscription(JointTrajectory, '/aura/action_chunk',
                                        self.chunks.append, 10)
        self.client.create_subscription(DiagnosticArray, '/aura/gate', self.gates.append, 1000)
        self.reset_client = self.client.create_client(Trigger, '/aura/reset')
        self.trigger = Trigger
        self.spin_until(lambda: self.image_pub.get_subscription_count() > 0
                        and self.joint_pub.get_subscription_count() > 0
                        and self.client.count_publishers('/aura/gate') > 0
                        and self.reset_client.service_is_ready(), 30, 'discovery')

    def spin_until(self, predicate, timeout, what):
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f'timed out after {timeout} s waiting for {what}')
            self.executor.spin_once(timeout_sec=0.02)

    def now_ns(self) -> int:
        return self.client.get_clock().now().nanoseconds

    def now_msg(self):
        return self.client.get_clock().now().to_msg()

    def state(self) -> dict:
        return {k: np.array(v, copy=True) for k, v in self.node.runtime.state_dict().items()}

    def good_frame(self, pixels) -> None:
        """A valid frame must give a chunk: the node is alive and answering."""
        from aura_ros.ros.fuzz_cases import GOOD_JOINTS

        chunks, kept = len(self.chunks), self.node._joints
        stamp = self.now_msg()
        self.joint_pub.publish(_joint_msg(GOOD_JOINTS, (stamp.sec, stamp.nanosec)))
        self.spin_until(lambda: self.node._joints is not kept, 5, 'joint state')
        self.image_pub.publish(_image_msg(pixels, self.now_msg()))
        self.spin_until(lambda: len(self.chunks) > chunks, 10, 'action chunk of a good frame')

    def close(self) -> None:
        self.executor.remove_node(self.node)
        self.node.stop()
        self.node.destroy_node()
        self.client.destroy_node()
        self.executor.shutdown()


def _joint_msg(js: dict, stamp: tuple[int, int]):
    from sensor_msgs.msg import JointState

    msg = JointState(name=js['names'], position=js['positions'], velocity=js['velocity'])
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
    return msg


def _image_msg(pixels: np.ndarray, stamp):
    from sensor_msgs.msg import Image

    msg = Image(height=pixels.shape[0], width=pixels.shape[1], encoding='rgb8',
                step=pixels.shape[1] * 3, data=pixels.tobytes())
    msg.header.stamp = stamp
    return msg


def fuzz_phase(h: BenchHarness, cases: int, seed: int, frames: list) -> dict:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hypothesis_seed

    from aura_ros.ros.fuzz_cases import LATE, any_joint_state, check_case, images

    tally = {'cases': 0, 'stepped': 0, 'late_stale_image': 0, 'alive_checks': 0}
    expected_reasons: Counter = Counter()
    failures: list[str] = []

    @hypothesis_seed(seed)
    @settings(max_examples=cases, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(img=images(), js=any_joint_state)
    def case(img, js):
        tally['cases'] += 1
        try:
            expected = check_case(h, img, js)
            if expected is None:
                tally['stepped'] += 1
            elif expected == LATE:                 # aged past max_obs_age_s in delivery: load
                tally['late_stale_image'] += 1
            else:
                expected_reasons[expected] += 1
            if not h.node._worker.is_alive():
                raise AssertionError('the worker thread died')
            if tally['cases'] % 100 == 0:
                h.good_frame(frames[tally['cases'] // 100 % len(frames)])
                tally['alive_checks'] += 1
        except AssertionError as err:
            failures.append(f'case {tally["cases"]}: {err}'[:500])
        if tally['cases'] % 1000 == 0:
            print(f'fuzz: {tally["cases"]} cases, {len(failures)} failures', flush=True)

    started = time.monotonic()
    case()
    elapsed = time.monotonic() - started
    try:
        h.good_frame(frames[0])
        alive_at_end = True
    except AssertionError:
        alive_at_end = False
    return {**tally, 'elapsed_s': round(elapsed, 1),
            'cases_per_s': round(tally['cases'] / elapsed, 2),
            'image_verdicts': dict(sorted(expected_reasons.items())),
            'node_rejections': dict(sorted(h.node.rejected.items())),
            'step_failed': h.node.rejected.get('step_failed', 0),
            'failures': len(failures), 'first_failures': failures[:10],
            'alive_at_end': alive_at_end}


def reset_phase(h: BenchHarness, resets: int, rate_hz: float, seed: int, frames: list) -> dict:
    """Resets at random moments while frames stream; the gate stream must split into episodes
    whose step counters run 1..N with N the count each reset's reply reports."""
    from aura_ros.ros.fuzz_cases import GOOD_JOINTS

    rng = np.random.default_rng(seed)
    first = h.reset_client.call_async(h.trigger.Request())     # a fresh episode to start from
    h.spin_until(first.done, 10, 'the first reset')
    settle = time.monotonic() + 0.5
    h.spin_until(lambda: time.monotonic() > settle, 1, 'gates in flight')
    gates_before = len(h.gates)
    replies, response_s, failures = [], [], []
    period = 1.0 / rate_hz
    sent, pending = 0, None
    next_frame = time.monotonic()
    reset_at = next_frame + rng.uniform(0, 4) * period
    started = time.monotonic()
    while len(replies) < resets:
        now = time.monotonic()
        if now - started > 600:
            failures.append(f'only {len(replies)} resets in 600 s')
            break
        if now >= next_frame:
            stamp = h.now_msg()
            h.joint_pub.publish(_joint_msg(GOOD_JOINTS, (stamp.sec, stamp.nanosec)))
            h.image_pub.publish(_image_msg(frames[sent % len(frames)], stamp))
            sent += 1
            next_frame += period
        if pending is None and now >= reset_at:
            pending = (h.reset_client.call_async(h.trigger.Request()), time.perf_counter())
        if pending is not None and pending[0].done():
            response_s.append(time.perf_counter() - pending[1])
            reply = pending[0].result()
            if not reply.success:
                failures.append(f'reset {len(replies)}: {reply.message}')
            replies.append(reply.message)
            pending = None
            reset_at = time.monotonic() + rng.uniform(0, 5) * period
        h.executor.spin_once(timeout_sec=0.002)
    elapsed = time.monotonic() - started
    episodes = [int(re.search(r'had (\d+) steps', m).group(1)) for m in replies]
    try:
        h.spin_until(lambda: h.node._frame is None, 5, 'worker idle')
        h.spin_until(lambda: len(h.gates) - gates_before
                     >= sum(episodes) + h.node.runtime.steps, 10, 'every gate')
    except AssertionError as err:
        failures.append(str(err))
    steps = [int({kv.key: kv.value for kv in g.status[0].values}['step'])
             for g in h.gates[gates_before:]]
    episodes.append(h.node.runtime.steps)
    if steps != [i for n in episodes for i in range(1, n + 1)]:
        failures.append('gate step counters do not split into the replied episodes')
    ms = np.asarray(response_s) * 1e3
    return {'resets': len(replies), 'frames_sent': sent, 'rate_hz': rate_hz,
            'elapsed_s': round(elapsed, 1), 'steps': len(steps),
            'nonempty_episodes': int(sum(n > 0 for n in episodes[:-1])),
            'response_ms': {'p50': round(float(np.percentile(ms, 50)), 2),
                            'p99': round(float(np.percentile(ms, 99)), 2),
                            'max': round(float(ms.max()), 2)} if ms.size else {},
            'failures': len(failures), 'first_failures': failures[:10]}


def main(args: argparse.Namespace) -> int:
    """`python -m aura_ros bench fuzz` (arguments: aura_ros/cli.py)."""
    try:
        import hypothesis  # noqa: F401
    except ImportError:
        print('error: bench fuzz needs hypothesis (pip install hypothesis)', file=sys.stderr)
        return 2
    import rclpy
    import torch
    from rclpy.context import Context

    from aura_ros.ros.fuzz_cases import JOINTS
    from aura_ros.runtime.init_model import init_model_dir

    torch.set_num_threads(1)
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    rng = np.random.default_rng(args.seed)
    frames = [rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(8)]
    context = Context()
    rclpy.init(context=context)
    with tempfile.TemporaryDirectory() as tmp:
        # the oracle knows the joints of this model: shoulder, elbow
        init_model_dir(Path(tmp) / 'model', image_size=(24, 32), d_model=32, joints=JOINTS,
                       actions=JOINTS, chunk=3, memory={'d_key': 8, 'd_val': 8,
                                                        'gate_init_bias': 0.0})
        h = BenchHarness(context, str(Path(tmp) / 'model'))
        try:
            h.good_frame(frames[0])
            fuzz = fuzz_phase(h, args.cases, args.seed, frames) if args.cases else {}
            print(f'fuzz: {json.dumps(fuzz)[:400]}', flush=True)
            resets = reset_phase(h, args.resets, args.rate, args.seed, frames) \
                if args.resets else {}
            print(f'resets: {json.dumps(resets)[:400]}', flush=True)
            health = {k: v for k, v in h.node.health().items() if not k.startswith('stage_')}
        finally:
            h.close()
            rclpy.try_shutdown(context=context)
    result = {
        'command': 'python -m aura_ros bench fuzz ' + ' '.join(sys.argv[3:]),
        'machine': f'{platform.machine()}, {os.cpu_count()} CPUs (shared, loaded: load average '
                   f'{os.getloadavg()[0]:.1f} at the end)',
        'ros_domain_id': os.environ.get('ROS_DOMAIN_ID', '0'),
        'seed': args.seed, 'fuzz': fuzz, 'resets': resets, 'node_health_at_end': health,
        'ok': not fuzz.get('failures') and fuzz.get('alive_at_end', True)
        and not fuzz.get('step_failed') and not resets.get('failures'),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + '\n')
    print(f'wrote {out}: ok={result["ok"]}')
    return 0 if result['ok'] else 1
