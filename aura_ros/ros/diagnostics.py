"""What aura_node says on /diagnostics: its health values, what makes it WARN, the message.

One status for the node (OK, WARN while `problems` names any, ERROR once the worker failed) and,
for a fleet, one per robot besides. `health(node)` is also the tests' view of the node.
"""

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

from aura_ros.ros.conversions import status
from aura_ros.ros.robot import Robot


def health(node) -> dict:
    """Counters and latency percentiles of `node` (an AuraNode), as published on /diagnostics:
    the process's (with the robot's own, `robot_health`, for a single-robot node; with every
    robot's steps and writes summed for a fleet).

    Runs on the executor while the worker appends to (or, on reset, clears) the latency
    buffers: RobotCounters copies each first, so this never races the worker.
    """
    runtime, params = node.runtime, node.params
    values = {'lifecycle_state': node.lifecycle_state,
              'frames_lost_in_transport': node.delivery.lost_in_transport,
              'frames_missed_by_node': node.delivery.missed_by_node,
              'image_publishers': node.input_checks.image_publishers,
              'image_transport': params.image_transport,
              'input_qos': params.input_qos,
              'clock_jumps_back': node.clock_jumps_back,
              'state_bytes': node.state_bytes}
    if runtime is not None:
        values.update({'device': runtime.device, 'execution_provider': runtime.provider,
                       'engine': runtime.engine, 'gate_threshold': runtime.gate_threshold})
    for robot in node.robots:                  # what each input subscribes with now
        for sub in list(robot.subscriptions):
            values[f'reliability_{sub.topic_name}'] = sub.reliability
    if node.failure is not None:
        values['worker_failure'] = node.failure
    if len(node.robots) == 1:
        values.update(robot_health(node, node.robots[0]))
    else:
        each = [robot_health(node, robot) for robot in node.robots]
        values['robots'] = len(node.robots)
        for key in ('steps', 'writes', 'frames_received', 'frames_dropped', 'frames_rejected'):
            values[key] = sum(v[key] for v in each)
    return values


def robot_health(node, robot: Robot) -> dict:
    """One robot's counters, episode and crash-resume, as its /diagnostics status shows."""
    runtime = node.runtime
    counters = runtime.counters[robot.row] if runtime is not None else None
    values = {**robot.counters.values(),
              'steps': counters.steps if counters else 0,
              'writes': counters.writes if counters else 0,
              'row_state_bytes': node.state_bytes // len(node.robots),
              'gate_images_rendered': robot.gate_topics.view.renders if robot.gate_topics
              else 0,
              'crash_resume': robot.crash.status if robot.crash is not None else 'off'}
    matcher = robot.matcher
    if matcher is not None:
        values['camera_sets_matched'] = matcher.matched
        values['camera_frames_unmatched'] = sum(matcher.unmatched.values())
        for camera, count in sorted(matcher.unmatched.items()):
            values[f'camera_{camera}_unmatched'] = count
    if robot.crash is not None:
        values.update(robot.crash.values())
    return values


def recent(counts, window_s: float) -> list[str]:
    """Problem counts of the last window, as the status message names them."""
    window = f'{window_s:g} s'
    return [f'{n} {kind} in the last {window}' for kind, n in sorted(counts.items())]


def problems(node) -> list[str]:
    """What makes the node WARN now: recent problems by kind, and input topic problems."""
    return (recent(node.problem_log.recent.counts(), node.params.health_window_s)
            + node.input_checks.problems)


def message(node) -> DiagnosticArray:
    """/diagnostics: OK, WARN while problems() names any, ERROR once the worker failed."""
    values = health(node)
    found = problems(node)
    if node.failure is not None:
        found = [f'the worker failed: {node.failure}', *found]
        level = DiagnosticStatus.ERROR
    else:
        level = DiagnosticStatus.WARN if found else DiagnosticStatus.OK
    summary = f'{values["lifecycle_state"]}: {values["steps"]} steps, {values["writes"]} writes'
    name = node.get_fully_qualified_name()
    msg = DiagnosticArray()
    msg.header.stamp = node.get_clock().now().to_msg()
    msg.status.append(status(f'{name}: AURA policy', '; '.join([*found, summary]), values,
                             level=level, hardware_id=values.get('device', '')))
    if len(node.robots) > 1:                   # a fleet: one status per robot besides
        for robot in node.robots:
            own = robot_health(node, robot)
            its = recent(robot.problems.counts(), node.params.health_window_s)
            robot_level = DiagnosticStatus.ERROR if node.failure is not None else (
                DiagnosticStatus.WARN if its else DiagnosticStatus.OK)
            text = f'{own["steps"]} steps, {own["writes"]} writes'
            msg.status.append(status(f'{name}: AURA policy, robot {robot.name}',
                                     '; '.join([*its, text]), own, level=robot_level,
                                     hardware_id=values.get('device', '')))
    return msg
