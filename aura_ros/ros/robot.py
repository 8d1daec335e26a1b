"""One robot served by aura_node: its row of the memory, its topics, its hand-over and counters.

aura_node serves one robot, or with the `robots` parameter a fleet: one process, one model and
one runtime whose memory state holds one row per robot (AuraRuntime(robots=N)). Everything that
belongs to one robot is one `Robot`, the same object in both modes (a single robot is a fleet of
one, named ''):

    inputs   <robot>/image (or <robot>/<camera>/image, .../compressed, <robot>/features) and
             <robot>/joint_states: the single-robot names under the robot's name
    outputs  <robot>/<node>/<group>, <robot>/<node>/gate, gate_values, gate_image (for one
             robot: ~/<group>, ~/gate, ...)
    service  <robot>/<node>/reset (for one robot: ~/reset): that robot's row and nothing else
    state    its row of the runtime, its own crash-resume file, its admission state (last
             stepped stamp, latest joint state), its camera-set matcher, its counters

The node does the ROS wiring and the stepping; a Robot only holds what is one robot's.

The fleet changes by a lifecycle reconfigure (`seat_fleet` at every configure): a robot that
stays keeps its object (counters, reset service) at its new row, one that left is dropped (its
snapshot was saved at cleanup), one that joins (or comes back) is new and resumes its own
snapshot when the state file has one.
"""

import math
from pathlib import Path
from typing import Callable, Optional

from aura_ros.ros.health import RecentProblems, RobotCounters
from aura_ros.runtime.crash_resume import CrashResume


def robot_state_file(state_file: str, robot: str) -> str:
    """A fleet robot's own crash-resume file beside `state_file`: state.safetensors ->
    state.arm1.safetensors (one file per robot: a corrupt one loses that robot's row only)."""
    if not state_file or not robot:
        return state_file
    path = Path(state_file)
    return str(path.with_name(f'{path.stem}.{robot}{path.suffix}'))


class Robot:
    """What aura_node holds for one robot (row `row` of the runtime)."""

    def __init__(self, name: str, row: int, node_name: str, state_file: str, log,
                 window_s: float = 10.0):
        self.name, self.row, self.node_name = name, row, node_name
        self.counters = RobotCounters()
        self.problems = RecentProblems(window_s)          # this robot's, for its own status
        path = robot_state_file(state_file, name)
        self.crash: Optional[CrashResume] = CrashResume(path, log, row=row) if path else None
        self.frame: Optional[tuple[dict, float]] = None   # {camera or 'features': msg}, time
        self.joints = None                                # (positions, stamp) of the latest
        self.last_stamp = -math.inf                       # of the last stepped observation
        self.reset_request: Optional[dict] = None
        self.last_gate: dict = {}
        self.reset_service = None                         # made and destroyed by the node
        self.clear_wiring()

    def seat(self, row: int) -> None:
        """Serve row `row` of the next runtime (the fleet changed at configure)."""
        self.row = row
        if self.crash is not None:
            self.crash.row = row

    def clear_wiring(self) -> None:
        """Forget the topics of a configure (the node has destroyed them)."""
        self.matcher = None
        self.subscriptions: list = []
        self.watches: dict = {}                # input name -> TopicWatch
        self.camera_topics: dict[str, str] = {}  # camera -> resolved topic
        self.group_pubs: dict = {}
        self.gate_pub = None
        self.gate_topics = None

    def save_state(self, runtime, problems) -> None:
        """Snapshot the robot's row (after a write, a reset, at shutdown): bytes follow writes;
        a failed save is a problem on `problems` (a ProblemLog), never an exception."""
        if self.crash is None or runtime is None:
            return
        err = self.crash.save(runtime)
        if err is not None:
            problems.report('state_save_failed', lambda: (
                f'could not save the state to {self.crash.path}: {err}'))

    def input_topic(self, relative: str) -> str:
        """An input's topic: the single-robot name under the robot's name."""
        return f'{self.name}/{relative}' if self.name else relative

    def output_topic(self, relative: str) -> str:
        """An output's (or the reset service's) name: ~/x for one robot, <robot>/<node>/x in a
        fleet, so /arm3/aura/reset is arm3's as ~/reset is the single robot's."""
        return f'{self.name}/{self.node_name}/{relative}' if self.name else f'~/{relative}'

    def label(self, node: str) -> str:
        """The robot's name in logs and /diagnostics."""
        return f'{node} {self.name}' if self.name else node


def seat_fleet(robots: list[Robot], names: tuple[str, ...],
               make: Callable[[str], Robot]) -> tuple[list[Robot], list[Robot]]:
    """The robots for `names` (() = one robot, named ''), in that order, each seated at its
    row: one that stays is the same object, a new one is `make(name)`. Also those that left."""
    kept = {robot.name: robot for robot in robots}
    fleet = [kept.pop(name, None) or make(name) for name in names or ('',)]
    for row, robot in enumerate(fleet):
        robot.seat(row)
    return fleet, list(kept.values())
