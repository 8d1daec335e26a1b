"""aura_node's input callbacks: count each message, refuse what can be refused at once, hand the
latest observation (or camera set) and joint state of each robot over to the worker.

They run on the executor and never compute: an unprocessed observation that a newer one
replaces is counted as dropped, so a slow step drops frames instead of queueing them.
"""

import time

from sensor_msgs.msg import JointState

from aura_ros.ros.conversions import checked_stamp_seconds, joints_to_array
from aura_ros.ros.robot import Robot
from aura_ros.runtime import InputError


class InputHandOver:
    """The subscription callbacks of `node` (an AuraNode), under its lock."""

    def __init__(self, node):
        self.node = node

    def on_observation(self, robot: Robot, name: str, msg, info: dict) -> None:
        """A camera frame or features message: count it, match camera sets, hand over."""
        node = self.node
        watch = robot.watches.get(name)
        if watch is None or not node.active:
            return
        watch.heard()
        if not self.count_sequence(watch.topic, info):
            return                                 # a copy, while input_qos auto re-subscribes
        admission, counters = node.admission, robot.counters
        if robot.matcher is not None and admission is not None:
            try:     # a frame no camera set could use never waits in the set buffer
                stamp = checked_stamp_seconds(msg.header.stamp)
                admission.check(node.now() - stamp, f'{name} frame')
            except InputError as err:
                with node.lock:
                    counters.received += 1
                node.problem_log.reject(robot, err, image=True)
                return
        with node.lock:
            if not node.active:
                return
            counters.received += 1
            if robot.matcher is None:
                observation = {name: msg}
            else:
                matched = robot.matcher.add(name, stamp, msg)
                if matched is None:
                    return
                observation = {camera: frame.item for camera, frame in matched.items()}
            if robot.frame is not None:
                counters.dropped += 1
                node.problem_log.recent.add('dropped')
                robot.problems.add('dropped')
            robot.frame = (observation, time.monotonic())
            node.lock.notify()

    def count_sequence(self, topic: str, info: dict, count_loss: bool = True) -> bool:
        """Account for the message in the delivery ledger (health.py); False for a message
        already had (the second copy while input_qos auto replaces a subscription)."""
        delivery = self.node.delivery
        fresh, lost = delivery.take(topic, info, count_loss)
        if lost:
            self.node.problem_log.report('frames_lost_in_transport', lambda: (
                f'{lost} message(s) lost in transport on {topic} '
                f'({delivery.lost_in_transport} so far): see input_qos and the Fast DDS '
                'profile (README "On a real robot")'))
        return fresh

    def on_joints(self, robot: Robot, msg: JointState, info: dict) -> None:
        """A joint state: checked at once, kept as the robot's latest."""
        node = self.node
        spec, admission = node.spec, node.admission
        if spec is None or admission is None or not node.active:
            return
        if not self.count_sequence(robot.input_topic('joint_states'), info, count_loss=False):
            return                                 # a copy, while input_qos auto re-subscribes
        robot.counters.joint_states_received += 1
        try:
            stamp = checked_stamp_seconds(msg.header.stamp)
            positions = joints_to_array(msg, spec.joint_names)
            admission.check_joint_state(stamp - node.now())
        except InputError as err:
            node.problem_log.reject(robot, err, image=False)
            return
        with node.lock:
            robot.joints = (positions, stamp)
