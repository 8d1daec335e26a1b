"""Joint trajectories executed the way ros2_control's joint_trajectory_controller does.

Per joint, the follower keeps a piecewise-linear plan of absolute position targets over time
(seconds on the simulator's clock) and holds the last one after its end. A new trajectory:

- starts at header.stamp (a zero stamp means "now"); point i is due at start + time_from_start;
- drops its points that are already in the past (a trajectory with none left is rejected);
- replaces, for the joints it names, the rest of the old plan from its first point on: the old
  plan's points before it are kept, and the target moves linearly from the last of them (or
  from where the old plan is now) to the new first point, as JTC does from the state at receipt;
- leaves the joints it does not name alone, so an arm and a gripper controller on two topics
  both work.

A malformed trajectory (unknown joints, positions of the wrong length, non-finite values, times
not strictly increasing) raises TrajectoryError with the reason and changes nothing.
"""

from dataclasses import dataclass
from typing import Sequence

import numpy as np


class TrajectoryError(ValueError):
    """A trajectory the controller rejects; `reason` is a short slug for counting."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class _Plan:
    times: np.ndarray       # [K] strictly increasing
    values: np.ndarray      # [K]

    def sample(self, t: float) -> float:
        return float(np.interp(t, self.times, self.values))


class TrajectoryFollower:
    """Position targets of `joint_names` as a function of time (see the module docstring)."""

    def __init__(self, joint_names: Sequence[str], initial: Sequence[float], now: float = 0.0):
        if len(joint_names) != len(initial):
            raise ValueError('one initial position per joint is needed')
        self.joint_names = tuple(joint_names)
        self.index = {name: i for i, name in enumerate(self.joint_names)}
        self.plans = [_Plan(np.array([now]), np.array([float(q)])) for q in initial]

    def sample(self, t: float) -> np.ndarray:
        """Targets of every joint at time t."""
        return np.array([plan.sample(t) for plan in self.plans])

    def hold(self, targets: Sequence[float], now: float) -> None:
        """Drop every plan and hold `targets` from now on."""
        self.plans = [_Plan(np.array([now]), np.array([float(q)])) for q in targets]

    def set_trajectory(self, names: Sequence[str], times: Sequence[float],
                       positions: Sequence[Sequence[float]], now: float) -> int:
        """Splice in a trajectory of absolute point `times`; returns the points kept.

        An empty trajectory stops the named joints where their plan is now.
        """
        names = list(names)
        unknown = [n for n in names if n not in self.index]
        if unknown or not names or len(set(names)) != len(names):
            raise TrajectoryError('joints', f'trajectory joints {names}: '
                                  + (f'unknown {unknown}; ' if unknown else '')
                                  + f'this controller has {list(self.joint_names)} '
                                  '(each at most once)')
        times = np.asarray(times, dtype=np.float64).reshape(-1)
        try:
            points = np.asarray(positions, dtype=np.float64).reshape(len(times), len(names))
        except ValueError as err:
            raise TrajectoryError('positions', f'every point needs {len(names)} positions '
                                  f'(one per joint): {err}') from err
        if not (np.isfinite(points).all() and np.isfinite(times).all()):
            raise TrajectoryError('nonfinite', 'trajectory has non-finite positions or times')
        if np.any(np.diff(times) <= 0):
            raise TrajectoryError('times', 'time_from_start must strictly increase')
        if len(times) == 0:
            for name in names:
                plan = self.plans[self.index[name]]
                self.plans[self.index[name]] = _Plan(np.array([now]), np.array([plan.sample(now)]))
            return 0
        future = times >= now
        if not future.any():
            raise TrajectoryError('late', f'all {len(times)} points are in the past (last due '
                                  f'{times[-1] - now:+.4f} s from now)')
        times, points = times[future], points[future]
        for j, name in enumerate(names):
            plan = self.plans[self.index[name]]
            keep = (plan.times > now) & (plan.times < times[0])
            anchor = [now] if times[0] > now else []
            self.plans[self.index[name]] = _Plan(
                np.concatenate([anchor, plan.times[keep], times]),
                np.concatenate([[plan.sample(now)] if anchor else [], plan.values[keep],
                                points[:, j]]))
        return len(times)

    def prune(self, now: float) -> None:
        """Forget knots that no longer matter (all but the last one at or before now)."""
        for plan in self.plans:
            past = int(np.searchsorted(plan.times, now, side='right')) - 1
            if past > 0:
                plan.times, plan.values = plan.times[past:], plan.values[past:]
