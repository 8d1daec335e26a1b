"""`python -m aura_ros bench fuzz`: a long fuzzing run against a live aura_node, and a reset storm.

Not a CI test (test/test_fuzz_node.py is the short version). Phase 1 sends `--cases`
hypothesis-drawn (joint state, image) pairs (aura_ros/ros/bench/fuzz_cases.py: strategies, oracle,
per-case check) and checks after each that the node is alive, that the memory state changed only
on accepted frames and that each rejection was counted under the reason the oracle predicted.
Then `--kind-cases` cases of each input kind of fuzz_attacks.py (beside it), each on a node of
its own: features (finite but huge, NaN, wrong sizes), JPEG/PNG (truncated, declared-size bombs,
headers claiming more than their data, flipped bytes) and two-camera stamp attacks. In every
phase no published message (chunks, gate, /diagnostics) may carry a NaN or Inf.
Phase 3 calls ~/reset `--resets` times at random moments while frames stream at `--rate` Hz and
checks every reply, the episode step counters against the replies, and the response times.
Mismatches are recorded, not raised, so one run reports all of them.
"""

import argparse
import json
import os
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from aura_ros import provenance

KINDS = ('features', 'compressed', 'two_cameras')     # the kinds of fuzz_attacks.py
KIND_INPUTS = {           # the node's parameters and the topics a client publishes, per kind
    'camera': ({}, {'image': 'Image'}),
    'features': ({}, {'features': 'Image'}),
    'compressed': ({'image_transport': 'compressed'}, {'image/compressed': 'CompressedImage'}),
    'two_cameras': ({}, {'front/image': 'Image', 'wrist/image': 'Image'}),
}


class BenchHarness:
    """The node under test in-process, a client node feeding it and recording every message
    the node publishes, one executor spinning both."""

    def __init__(self, context, model_dir: str, kind: str = 'camera'):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.parameter import Parameter
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import CompressedImage, Image, JointState
        from std_srvs.srv import Trigger
        from trajectory_msgs.msg import JointTrajectory

        from aura_ros.ros.node import AuraNode

        params, topics = KIND_INPUTS[kind]
        self.node = AuraNode(context=context, parameter_overrides=[
            Parameter('model_dir', value=model_dir), Parameter('device', value='cpu'),
            *(Parameter(k, value=v) for k, v in params.items())])
        self.client = Node('aura_fuzz_client', context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.client)
        types = {'Image': Image, 'CompressedImage': CompressedImage}
        self.pubs = {topic: self.client.create_publisher(types[name], topic,
                                                         qos_profile_sensor_data)
                     for topic, name in topics.items()}
        self.image_pub = self.pubs.get('image')
        self.joint_pub = self.client.create_publisher(JointState, 'joint_states',
                                                      qos_profile_sensor_data)
        self.chunks, self.gates, self.published = [], [], []
        self.checked = 0                     # self.published[:checked] were checked finite
        for topic in ('/aura/action_chunk', *(f'/aura/{g.name}'
                                              for g in self.node.spec.output_groups)):
            self.client.create_subscription(JointTrajectory, topic, self._on_chunk, 10)
        self.client.create_subscription(DiagnosticArray, '/aura/gate', self._on_gate, 1000)
        self.client.create_subscription(DiagnosticArray, '/diagnostics',
                                        self.published.append, 100)
        self.reset_client = self.client.create_client(Trigger, '/aura/reset')
        self.trigger = Trigger
        self.spin_until(lambda: all(p.get_subscription_count() for p in self.pubs.values())
                        and (self.joint_pub.get_subscription_count() > 0
                             or not self.node.spec.joint_names)
                        and self.client.count_publishers('/aura/gate') > 0
                        and self.reset_client.service_is_ready(), 30, 'discovery')

    def _on_chunk(self, msg) -> None:
        self.chunks.append(msg)
        self.published.append(msg)

    def _on_gate(self, msg) -> None:
        self.gates.append(msg)
        self.published.append(msg)

    def spin_until(self, predicate, timeout, what):
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f'timed out after {timeout} s waiting for {what}')
            self.executor.spin_once(timeout_sec=0.02)

    def spin(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.02)

    def publish(self, topic: str, msg) -> None:
        self.pubs[topic].publish(msg)

    def now_ns(self) -> int:
        return self.client.get_clock().now().nanoseconds

    def now_msg(self):
        return self.client.get_clock().now().to_msg()

    def stamp_at(self, offset_s: float):
        from builtin_interfaces.msg import Time

        sec, nanosec = divmod(self.now_ns() + int(offset_s * 1e9), 10**9)
        return Time(sec=sec, nanosec=nanosec)

    def state(self) -> dict:
        return {k: np.array(v, copy=True) for k, v in self.node.runtime.state_dict().items()}

    def good_joints(self) -> None:
        """A fresh, good joint state, kept by the node (nothing to do for a features model)."""
        from aura_ros.ros.bench.fuzz_cases import GOOD_JOINTS

        if not self.node.spec.joint_names:
            return
        kept, stamp = self.node._joints, self.now_msg()
        self.joint_pub.publish(_joint_msg(GOOD_JOINTS, (stamp.sec, stamp.nanosec)))
        self.spin_until(lambda: self.node._joints is not kept, 5, 'joint state')

    def nonfinite_published(self) -> list:
        """The NaN/Inf numbers in messages published since the last call."""
        from aura_ros.ros.bench.fuzz_attacks import nonfinite_numbers

        found = [text for msg in self.published[self.checked:] for text in nonfinite_numbers(msg)]
        self.checked = len(self.published)
        return found

    def good_frame(self, pixels) -> None:
        """A valid observation must give a step (its gate; its chunk may be left out as past on
        a loaded machine, README "On a real robot"): the node is alive and answering."""
        gates, steps = len(self.gates), self.node.runtime.steps
        self.good_joints()
        stamp = self.now_msg()
        if 'features' in self.pubs:
            from aura_ros.ros.bench.fuzz_attacks import D_MODEL, features_message

            values = np.resize(pixels.astype(np.float32).ravel() / 255, D_MODEL)
            self.publish('features', features_message(
                dict(values=values, width=D_MODEL, encoding='32FC1'), stamp))
        elif 'image/compressed' in self.pubs:
            from aura_ros.ros.bench.fuzz_attacks import compressed_message, encode

            self.publish('image/compressed', compressed_message(
                dict(fmt='png', data=encode(pixels, 'png')), stamp))
        else:
            from aura_ros.ros.bench.fuzz_cases import image_msg

            for topic in self.pubs:
                self.publish(topic, image_msg(pixels, stamp))
        # its step, and a gate (this step's, or an earlier one's still in flight)
        self.spin_until(lambda: self.node.runtime.steps > steps and len(self.gates) > gates, 10,
                        'the step of a good frame')

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


def kind_cases(h: BenchHarness, kind: str, frames: list):
    """(hypothesis strategies, check(**drawn) -> outcome) of one input kind."""
    from hypothesis import strategies as st

    from aura_ros.ros.bench import fuzz_attacks as attacks
    from aura_ros.ros.bench.fuzz_cases import any_joint_state, check_case, images

    if kind == 'camera':
        return (dict(img=images(), js=any_joint_state),
                lambda img, js: check_case(h, img, js) or 'stepped')
    if kind == 'features':
        return dict(f=attacks.features_inputs()), lambda f: attacks.check_features(h, f)
    if kind == 'compressed':
        return dict(c=attacks.compressed_inputs()), lambda c: attacks.check_compressed(h, c)
    return (dict(a=attacks.camera_attacks, i=st.integers(0, len(frames) - 1)),
            lambda a, i: attacks.check_attack(h, a, frames[i]))


def fuzz_phase(h: BenchHarness, cases: int, seed: int, frames: list,
               kind: str = 'camera', max_failures: int = 0) -> dict:
    """`cases` drawn inputs of one kind, each checked against the oracle; after each, nothing
    non-finite published; every 100 cases (and at the end) a good frame must still step.
    max_failures: stop trying cases after that many failures (0: never)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hypothesis_seed

    from aura_ros.ros.bench.fuzz_cases import LATE

    strategies, check = kind_cases(h, kind, frames)
    tally = {'cases': 0, 'stepped': 0, 'late_stale_image': 0, 'alive_checks': 0}
    expected_reasons: Counter = Counter()
    failures: list[str] = []
    nonfinite: list[str] = []

    @hypothesis_seed(seed)
    @settings(max_examples=cases, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(**strategies)
    def case(**drawn):
        if max_failures and len(failures) >= max_failures:
            return
        tally['cases'] += 1
        try:
            outcome = check(**drawn)
            if outcome == 'stepped':
                tally['stepped'] += 1
            elif outcome == LATE:                  # aged past max_obs_age_s in delivery: load
                tally['late_stale_image'] += 1
            else:
                expected_reasons[outcome] += 1
            if not h.node._worker.is_alive():
                raise AssertionError('the worker thread died')
            if tally['cases'] % 100 == 0:
                h.good_frame(frames[tally['cases'] // 100 % len(frames)])
                tally['alive_checks'] += 1
            bad = h.nonfinite_published()
            if bad:
                nonfinite.extend(bad)
                raise AssertionError(f'non-finite numbers published: {bad[:3]}')
        except AssertionError as err:
            failures.append(f'{kind} case {tally["cases"]}: {err}'[:500])
        if tally['cases'] % 1000 == 0:
            print(f'fuzz {kind}: {tally["cases"]} cases, {len(failures)} failures', flush=True)

    started = time.monotonic()
    case()
    elapsed = time.monotonic() - started
    try:
        h.good_frame(frames[0])
        alive_at_end = True
    except AssertionError:
        alive_at_end = False
    h.spin(0.5)                                    # the last outputs, then the last check
    nonfinite.extend(h.nonfinite_published())
    return {**tally, 'elapsed_s': round(elapsed, 1),
            'cases_per_s': round(tally['cases'] / elapsed, 2),
            'verdicts': dict(sorted(expected_reasons.items())),
            'node_rejections': dict(sorted(h.node.rejected.items())),
            'step_failed': h.node.rejected.get('step_failed', 0),
            'messages_checked_finite': h.checked, 'nonfinite_published': len(nonfinite),
            'first_nonfinite': nonfinite[:5],
            'failures': len(failures), 'first_failures': failures[:10],
            'alive_at_end': alive_at_end}


def reset_phase(h: BenchHarness, resets: int, rate_hz: float, seed: int, frames: list) -> dict:
    """Resets at random moments while frames stream; the gate stream must split into episodes
    whose step counters run 1..N with N the count each reset's reply reports."""
    from aura_ros.ros.bench.fuzz_cases import GOOD_JOINTS, image_msg

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
            h.image_pub.publish(image_msg(frames[sent % len(frames)], stamp))
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

    from aura_ros.ros.bench.fuzz_attacks import fuzz_model

    torch.set_num_threads(1)
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    rng = np.random.default_rng(args.seed)
    frames = [rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(8)]
    context = Context()
    rclpy.init(context=context)
    phases = {'camera': args.cases, **{k: args.kind_cases for k in KINDS}}
    fuzz, kinds, resets, health = {}, {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind, cases in phases.items():
            if not cases and not (kind == 'camera' and args.resets):
                continue
            model = fuzz_model(Path(tmp) / kind, kind)
            h = BenchHarness(context, str(model), kind)
            try:
                h.good_frame(frames[0])
                result = fuzz_phase(h, cases, args.seed, frames, kind) if cases else {}
                print(f'fuzz {kind}: {json.dumps(result)[:400]}', flush=True)
                if kind == 'camera':
                    fuzz = result
                    resets = reset_phase(h, args.resets, args.rate, args.seed, frames) \
                        if args.resets else {}
                    print(f'resets: {json.dumps(resets)[:400]}', flush=True)
                    health = {k: v for k, v in h.node.health().items()
                              if not k.startswith('stage_')}
                else:
                    kinds[kind] = result
            finally:
                h.close()
    rclpy.try_shutdown(context=context)
    phases_run = [fuzz, *kinds.values()]
    result = {
        **provenance.header(provenance.command('python -m aura_ros bench fuzz', sys.argv[3:]),
                           'shared, loaded; load average at the end'),
        'ros_domain_id': os.environ.get('ROS_DOMAIN_ID', '0'),
        'seed': args.seed, 'fuzz': fuzz, 'kinds': kinds, 'resets': resets,
        'cases_total': sum(p.get('cases', 0) for p in phases_run),
        'failures_total': sum(p.get('failures', 0) for p in phases_run),
        'nonfinite_published_total': sum(p.get('nonfinite_published', 0) for p in phases_run),
        'node_health_at_end': health,
        'ok': all(not p.get('failures') and p.get('alive_at_end', True)
                  and not p.get('step_failed') and not p.get('nonfinite_published')
                  for p in phases_run) and not resets.get('failures'),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + '\n')
    print(f'wrote {out}: ok={result["ok"]}')
    return 0 if result['ok'] else 1
