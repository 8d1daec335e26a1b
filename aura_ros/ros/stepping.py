"""One step of aura_node's worker: admit and decode each robot's observation, step the admitted
robots together, publish each one's chunk, gate and counters.

Runs on the worker thread only, between configure and cleanup (the node's runtime, spec and
admission are set). An observation that fails its checks is rejected by reason and the node
goes on; a step that was taken but whose publishing failed counts as taken (`publish_failures`).
"""

import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray

from aura_ros.ros.conversions import checked_stamp_seconds, status
from aura_ros.ros.inputs import features_to_array, frame_to_array
from aura_ros.ros.robot import Robot
from aura_ros.ros.trajectory import group_trajectories, plan, time_ns
from aura_ros.runtime import InputError


class Stepper:
    """The step of `node` (an AuraNode): its runtime, admission, parameters and problem log."""

    def __init__(self, node):
        self.node = node

    def step(self, frames: list) -> None:
        """Admit and decode each robot's observation, step the admitted ones together (one
        batched backbone call, one batched memory step), publish each robot's results."""
        node, problems = self.node, self.node.problem_log
        admitted = {}
        for robot, (observation, received), joints in frames:
            try:
                admitted[robot.row] = (robot, self.admit(robot, observation, joints, received))
            except InputError as err:
                problems.reject(robot, err, image=True)
            except Exception as err:  # keep the node alive  # noqa: BLE001
                problems.reject(robot, InputError('step_failed', f'step failed: {err!r}'),
                                image=True)
        if not admitted:
            return
        runtime = node.runtime
        counts = {row: runtime.counters[row].steps for row in admitted}
        try:
            results = runtime.step_rows({row: (prepared['inputs'], prepared['positions'])
                                         for row, (_, prepared) in admitted.items()})
        except Exception as err:  # keep the node alive  # noqa: BLE001
            results = {row: InputError('step_failed', f'step failed: {err!r}')
                       for row in admitted}
        for row, (robot, prepared) in admitted.items():
            result = results[row]
            if isinstance(result, InputError):
                problems.reject(robot, result, image=True)
                continue
            try:
                self.publish(robot, prepared, result)
            except Exception as err:  # keep the node alive  # noqa: BLE001
                if runtime.counters[row].steps == counts[row]:
                    problems.reject(robot, InputError('step_failed', f'step failed: {err!r}'),
                                    image=True)
                elif node.context.ok():            # committed, then publishing failed
                    robot.counters.publish_failures += 1
                    whose = f' of {robot.name}' if robot.name else ''
                    problems.report('publish_failed', lambda err=err, whose=whose, row=row: (
                        f'step {runtime.counters[row].steps}{whose} was taken but '
                        f'publishing its results failed: {err!r}'))
                # else: shutting down (Ctrl-C during the step): the step counts as taken

    def admit(self, robot: Robot, observation: dict, joints, received: float) -> dict:
        """The checks before a step (admission.py) and the decoding: what the step needs."""
        node, spec = self.node, self.node.spec
        started = time.perf_counter()
        stamps = {name: checked_stamp_seconds(msg.header.stamp)
                  for name, msg in observation.items()}
        newest = max(stamps, key=stamps.get)       # a camera set is as recent as its newest
        stamp, header_stamp = stamps[newest], observation[newest].header.stamp
        what = 'features' if spec.features_in else 'image'
        now = node.now()
        node.admission.check_step(stamp, now, robot.last_stamp,
                                  None if joints is None else joints[1],
                                  bool(spec.n_joints), what, robot.counters.step_time())
        positions = joints[0] if spec.n_joints else np.zeros(0, np.float32)
        if spec.features_in:
            inputs = features_to_array(observation[newest], spec.memory.d_model)
            gate_frame = None
        else:
            inputs = {c.name: frame_to_array(observation[c.name], (c.width, c.height),
                                             node.max_pixels[c.name])
                      for c in spec.cameras}
            gate_frame = inputs[spec.cameras[0].name]
        return {'inputs': inputs, 'positions': positions, 'stamp': stamp, 'age': now - stamp,
                'header_stamp': header_stamp, 'started': started, 'received': received,
                'decoded': time.perf_counter(), 'gate_frame': gate_frame}

    def publish(self, robot: Robot, prepared: dict, result) -> None:
        """A committed step's chunk, gate and counters, for its robot."""
        node, runtime, params, problems = (self.node, self.node.runtime, self.node.params,
                                           self.node.problem_log)
        stamp, started = prepared['stamp'], prepared['started']
        robot.last_stamp = stamp
        counters = robot.counters
        timing = plan(time_ns(prepared['header_stamp']), node.get_clock().now().nanoseconds,
                      node.spec.action_period_s, len(result.action), params.chunk_min_lead_s)
        chunks = group_trajectories(result.targets, runtime.contract.names, timing,
                                    params.frame_id)
        for name, msg in chunks.items():
            robot.group_pubs[name].publish(msg)
        counters.clipped += result.clipped
        counters.points_dropped += timing.dropped
        if not chunks:
            counters.chunks_expired += 1
            ready_age = timing.publish_ns * 1e-9 - stamp
            step_s = time.perf_counter() - started
            age = prepared['age']
            problems.report('chunk_expired', lambda: (
                f'a whole action chunk was past when it was ready ({counters.chunks_expired} so '
                f'far): the observation was {age:.3f} s old when the step began and '
                f'{ready_age:.3f} s when its chunk was ready; the chunk ends '
                f'{node.admission.horizon_s:.3f} s after the stamp and needs '
                f'{params.chunk_min_lead_s:g} s of lead; the step took '
                f'{step_s * 1e3:.1f} ms; not published (the memory step was taken)'))
        gate = result.gate
        if gate.wrote:
            robot.save_state(runtime, problems)
        if gate.discarded:
            counters.nonfinite_discarded += 1
            problems.report('nonfinite_state_discarded', lambda: (
                f'step {gate.step}: the new memory state was not finite; write discarded, '
                f'the last good state kept ({counters.nonfinite_discarded} so far)'))
        latency = time.perf_counter() - started
        robot.last_gate = {'wrote': gate.wrote, 'p': gate.p, 'surprise': gate.surprise,
                           'step': gate.step, 'writes': gate.writes,
                           'discarded': gate.discarded,
                           'write_rate': gate.writes / max(gate.step, 1),
                           'gate_threshold': runtime.gate_threshold,
                           'state_bytes': node.state_bytes // len(node.robots),
                           'latency_ms': latency * 1e3,
                           'first_point': timing.first_point, 'clipped': result.clipped}
        gate_msg = DiagnosticArray()
        gate_msg.header.stamp = prepared['header_stamp']  # the observation's: traceable
        gate_msg.status.append(status(robot.label('aura') + '/gate' if robot.name else
                                      'aura/gate', 'wrote' if gate.wrote else 'skipped',
                                      robot.last_gate, hardware_id=runtime.device))
        robot.gate_pub.publish(gate_msg)
        robot.gate_topics.record(robot.last_gate, prepared['gate_frame'])
        published = time.perf_counter()
        decoded = prepared['decoded']
        stages = {'decode': decoded - started, **result.timings,
                  'publish': published - decoded - result.timings.get('total', 0.0),
                  'queue': started - prepared['received']}
        counters.record(stages, published - prepared['received'])
