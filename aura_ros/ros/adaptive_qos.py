"""`input_qos: auto`: subscribe with the reliability the publishers offer, as rosbag2 does.

A reliable subscription never matches a best-effort publisher (most camera drivers publish with
the sensor-data QoS), and a best-effort one loses large frames that a reliable publisher would
have resent (docs/results/frame_delivery.md). So per input topic: RELIABLE when every publisher
of the topic's type offers reliable, BEST_EFFORT otherwise (also while there is none yet).

The choice is made again whenever the node checks its inputs (`adapt`, on the /diagnostics
tick). When it changes, the subscription with the new reliability is made first and the old one
is destroyed only once the new one has matched as many publishers (or after RETIRE_AFTER_S): no
message is lost in the switch. Messages that both receive meanwhile come twice; the node drops
the second copy by its publisher's sequence number. Nothing but the reliability changes.
"""

import time
from copy import copy
from typing import Callable, Optional

from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.subscription import Subscription

RETIRE_AFTER_S = 5.0          # a replaced subscription lives at most this long after the switch
NAMES = {ReliabilityPolicy.RELIABLE: 'reliable', ReliabilityPolicy.BEST_EFFORT: 'best_effort'}


def offered_reliability(offered: list) -> ReliabilityPolicy:
    """RELIABLE when every publisher offers reliable (and there is one), else BEST_EFFORT."""
    if offered and all(r == ReliabilityPolicy.RELIABLE for r in offered):
        return ReliabilityPolicy.RELIABLE
    return ReliabilityPolicy.BEST_EFFORT


def type_name(msg_type) -> str:
    """sensor_msgs.msg.Image -> 'sensor_msgs/msg/Image', as the ROS graph names it."""
    return f'{msg_type.__module__.split(".")[0]}/msg/{msg_type.__name__}'


def why(topic: str, offered: list, policy: ReliabilityPolicy) -> str:
    """The one info line that says why the subscription changed."""
    if not offered:
        cause = 'no publisher'
    elif policy == ReliabilityPolicy.RELIABLE:
        cause = ('publisher is reliable' if len(offered) == 1
                 else f'all {len(offered)} publishers are reliable')
    else:
        cause = 'a publisher is best effort'
    return f'{topic}: {cause}, subscribing {NAMES[policy].replace("_", " ")}'


class InputSubscription:
    """One input topic's subscription: fixed QoS, or with `adaptive` the publishers' reliability.

    `on_incompatible(event)` is called when a publisher offers a QoS the subscription cannot
    match; with `adaptive`, only when re-subscribing at the next `adapt` did not cure it (a
    switch is pending until then, and a replaced subscription's complaints are moot).
    """

    def __init__(self, node: Node, msg_type, topic: str, callback: Callable, qos: QoSProfile,
                 adaptive: bool, on_incompatible: Optional[Callable] = None):
        self._node, self._msg_type, self._topic, self._callback = node, msg_type, topic, callback
        self._qos, self.adaptive, self._on_incompatible = qos, adaptive, on_incompatible
        self.topic_name = node.resolve_topic_name(topic)          # expanded and remapped
        self._type_name = type_name(msg_type)
        self._retiring: list[tuple[Subscription, float]] = []
        self._pending: Optional[object] = None                    # an incompatibility event
        self.reason = ''
        policy = qos.reliability
        if adaptive:
            offered = self._offered()
            policy = offered_reliability(offered)
            self.reason = why(self.topic_name, offered, policy)
        self.sub = self._create(policy)

    @property
    def reliability(self) -> str:
        """'reliable' or 'best_effort': what the subscription asks for now."""
        return NAMES.get(self.sub.qos_profile.reliability, str(self.sub.qos_profile.reliability))

    def adapt(self) -> Optional[str]:
        """Retire a replaced subscription whose successor has matched; with `adaptive`, switch
        when the publishers' reliability changed. Returns the reason line after a switch."""
        self._retire()
        if not self.adaptive:
            return None
        offered = self._offered()
        policy = offered_reliability(offered)
        pending, self._pending = self._pending, None
        if policy == self.sub.qos_profile.reliability:
            if pending is not None and self._on_incompatible is not None:
                self._on_incompatible(pending)           # not a reliability mismatch
            return None
        self._retiring.append((self.sub, time.monotonic()))
        self.sub = self._create(policy)
        self.reason = why(self.topic_name, offered, policy)
        return self.reason

    def destroy(self) -> None:
        for sub, _ in self._retiring:
            self._node.destroy_subscription(sub)
        self._node.destroy_subscription(self.sub)
        self._retiring = []

    def _offered(self) -> list:
        return [info.qos_profile.reliability
                for info in self._node.get_publishers_info_by_topic(self.topic_name)
                if info.topic_type == self._type_name]

    def _create(self, policy: ReliabilityPolicy) -> Subscription:
        qos = copy(self._qos)
        qos.reliability = policy
        made: list[Subscription] = []

        def incompatible(event) -> None:
            if not made or made[0] is not self.sub:
                return                                   # a replaced subscription: going away
            if self.adaptive:
                self._pending = event                    # the next adapt() may cure it
            elif self._on_incompatible is not None:
                self._on_incompatible(event)

        made.append(self._node.create_subscription(
            self._msg_type, self._topic, self._callback, qos,
            event_callbacks=SubscriptionEventCallbacks(incompatible_qos=incompatible)))
        return made[0]

    def _retire(self) -> None:
        now, keep = time.monotonic(), []
        for sub, since in self._retiring:
            if (self.sub.get_publisher_count() >= sub.get_publisher_count()
                    or now - since > RETIRE_AFTER_S):
                self._node.destroy_subscription(sub)
            else:
                keep.append((sub, since))
        self._retiring = keep
