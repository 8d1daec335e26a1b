"""Absolute joint targets -> one JointTrajectory per output group, timed for a controller.

The stamping rule (docs: README "On a real robot"). Chunk point i is the target for
`t_i = observation stamp + (i + 1) * action_period_s`. A controller such as
joint_trajectory_controller executes point i at `header.stamp + time_from_start` and drops
points whose time has passed. Stamping the message with the observation time would put the
first points in the past by the node's latency, so:

    header.stamp          = the time the chunk is published (node clock)
    time_from_start_i     = t_i - header.stamp
    points kept           = those with time_from_start_i >= min_lead_s

`min_lead_s` covers the trip to the controller (and its own scheduling). The times of the kept
points are unchanged - only the reference moved - so the targets stay where the model meant them
in time. The observation stamp stays traceable: the gate message (`~/gate`) is stamped with it,
its `first_point` says which chunk index the first kept point is, and `answers` tells from the
chunk alone whether it was computed for a given observation stamp. A chunk whose every point has
passed is not published at all (the caller counts it).
"""

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np
from builtin_interfaces.msg import Duration, Time
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

NS = 1_000_000_000


def time_msg(ns: int) -> Time:
    return Time(sec=int(ns // NS), nanosec=int(ns % NS))


def duration_msg(ns: int) -> Duration:
    return Duration(sec=int(ns // NS), nanosec=int(ns % NS))


def time_ns(stamp: Time) -> int:
    return int(stamp.sec) * NS + int(stamp.nanosec)


@dataclass(frozen=True)
class Timing:
    """Which chunk points are still ahead, and their time_from_start (ns) after publish_ns."""

    publish_ns: int
    first_point: int                # chunk index of the first kept point
    offsets_ns: tuple[int, ...]     # time_from_start of each kept point

    @property
    def dropped(self) -> int:
        return self.first_point


def plan(observation_ns: int, publish_ns: int, period_s: float, points: int,
         min_lead_s: float) -> Timing:
    """The stamping rule above for a chunk of `points` points."""
    period_ns = period_s * NS
    lead_ns = min_lead_s * NS
    # integers throughout: a stamp in ns (~1.8e18) is beyond float64's exact range
    offsets = [observation_ns + int(round((i + 1) * period_ns)) - publish_ns
               for i in range(points)]
    first = next((i for i, dt in enumerate(offsets) if dt >= lead_ns), points)
    return Timing(publish_ns, first, tuple(offsets[first:]))


def trajectory(targets: np.ndarray, joint_names: Sequence[str], timing: Timing,
               frame_id: str = '') -> JointTrajectory:
    """One group's kept points (absolute positions) as a JointTrajectory."""
    msg = JointTrajectory()
    msg.header.stamp = time_msg(timing.publish_ns)
    msg.header.frame_id = frame_id
    msg.joint_names = list(joint_names)
    rows = np.asarray(targets, dtype=np.float64)[timing.first_point:]
    for row, offset in zip(rows, timing.offsets_ns, strict=True):
        msg.points.append(JointTrajectoryPoint(positions=row.tolist(),
                                               time_from_start=duration_msg(offset)))
    return msg


def answers(msg: JointTrajectory, observation_ns: int, period_s: float,
            tolerance_ns: int = 2) -> Optional[int]:
    """The chunk index of msg's first point if msg answers the observation stamped
    `observation_ns` (its points lie at observation + (i + 1) periods), else None."""
    if not msg.points:
        return None
    first = time_ns(msg.header.stamp) + time_ns(msg.points[0].time_from_start)
    index = round((first - observation_ns) / (period_s * NS)) - 1
    if index < 0:
        return None
    meant = observation_ns + int(round((index + 1) * period_s * NS))
    return index if abs(meant - first) <= tolerance_ns else None


def group_trajectories(targets: Mapping[str, np.ndarray], joints: Mapping[str, Sequence[str]],
                       timing: Timing, frame_id: str = '') -> dict[str, JointTrajectory]:
    """{group: JointTrajectory} with only that group's joints; {} when no point is left."""
    if not timing.offsets_ns:
        return {}
    return {name: trajectory(values, joints[name], timing, frame_id)
            for name, values in targets.items()}
