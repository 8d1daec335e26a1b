"""Alignment on the camera clock: which frames become training rows, with which joints and targets.

The rule (pure numpy, the same for every source kind):
  * the first camera's frames are the clock. With several cameras each such frame is matched to
    the nearest frame of every other camera within `camera_skew_s`; unmatched frames are dropped.
  * joints = the latest joint state at or before the frame; a frame with none, or whose latest is
    older than `joint_tolerance_s`, is dropped (a stalled driver must not teach stale states).
  * the target of chunk point i = the commanded position at frame time + (i + 1) * period,
    LINEARLY INTERPOLATED between commands. A frame before the first command, or whose last chunk
    point lies after the last command, is dropped: its targets would be invented, not recorded.
Every drop is counted by reason, so a reader can report what it threw away.
"""

from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import numpy as np

from .demonstrations import DataError

EDGE_S = 1e-6   # 1 us of float slack (stamps ~1.7e9 s carry ~2e-7 s): edges are inclusive
DROP_REASONS = ('duplicate_stamp', 'camera_unmatched', 'no_joint_state', 'stale_joints',
                'before_first_command', 'after_last_command')


@dataclass(frozen=True)
class SampledCommands:
    """Commands as samples (stamp, position): leader-arm joint states, Float64MultiArray, LeRobot
    'action'. Between samples the command is linear; outside them it is undefined."""

    stamps: np.ndarray   # [K] float64 seconds
    values: np.ndarray   # [K, n] positions

    def __post_init__(self) -> None:
        stamps = np.asarray(self.stamps, np.float64)
        values = np.asarray(self.values, np.float64).reshape(len(stamps), -1)
        if len(stamps) == 0:
            raise DataError('no commands')
        order = np.argsort(stamps, kind='stable')
        stamps, values = stamps[order], values[order]
        # one sample per stamp: the one recorded last wins, as it would on the robot
        keep = np.append(np.diff(stamps) > 0, True)
        object.__setattr__(self, 'stamps', stamps[keep])
        object.__setattr__(self, 'values', values[keep])

    @property
    def start(self) -> float:
        return float(self.stamps[0])

    @property
    def end(self) -> float:
        return float(self.stamps[-1])

    def at(self, t: np.ndarray) -> np.ndarray:
        """[len(t), n] float64 linearly interpolated positions (clamped at the ends)."""
        t = np.asarray(t, np.float64)
        return np.stack([np.interp(t, self.stamps, self.values[:, j])
                         for j in range(self.values.shape[1])], axis=-1)


@dataclass(frozen=True)
class TrajectoryCommands:
    """JointTrajectory commands. At time t the latest trajectory that has started (start <= t)
    is in force; its points, at start + time_from_start, are interpolated linearly (held before
    its first and after its last point), as a trajectory controller replaces a running goal."""

    starts: np.ndarray                 # [M] float64: header.stamp, or receive time if zero
    times: list = field(default_factory=list)       # M arrays [P_m] absolute point times
    positions: list = field(default_factory=list)   # M arrays [P_m, n]

    def __post_init__(self) -> None:
        starts = np.asarray(self.starts, np.float64)
        if len(starts) == 0 or len(self.times) != len(starts) or \
                len(self.positions) != len(starts):
            raise DataError('no trajectories (or starts/times/positions of different lengths)')
        order = np.argsort(starts, kind='stable')
        object.__setattr__(self, 'starts', starts[order])
        object.__setattr__(self, 'times', [np.asarray(self.times[i], np.float64) for i in order])
        object.__setattr__(self, 'positions',
                           [np.asarray(self.positions[i], np.float64) for i in order])

    @property
    def start(self) -> float:
        return float(self.starts[0])

    @property
    def end(self) -> float:
        return float(self.times[-1][-1])

    def at(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, np.float64)
        which = np.clip(np.searchsorted(self.starts, t, side='right') - 1, 0, None)
        out = np.empty((len(t), self.positions[0].shape[1]), np.float64)
        for m in np.unique(which):
            rows = which == m
            times, pos = self.times[m], self.positions[m]
            out[rows] = np.stack([np.interp(t[rows], times, pos[:, j])
                                  for j in range(pos.shape[1])], axis=-1)
        return out


@dataclass(frozen=True)
class MergedCommands:
    """Several command streams (one per controller) side by side: at time t the columns of
    each, in order. Defined where every part is, so a frame needs all controllers' commands."""

    parts: tuple

    @property
    def start(self) -> float:
        return max(p.start for p in self.parts)

    @property
    def end(self) -> float:
        return min(p.end for p in self.parts)

    def at(self, t: np.ndarray) -> np.ndarray:
        return np.concatenate([p.at(t) for p in self.parts], axis=-1)


Commands = Union[SampledCommands, TrajectoryCommands, MergedCommands]


@dataclass
class RawRecording:
    """One recording (a bag, a LeRobot episode) before alignment: streams as recorded."""

    name: str
    camera_stamps: list            # per camera [N_c] float64 seconds, in recorded order
    camera_frames: list            # per camera [N_c, H, W, 3] uint8 (a spool's np.memmap)
    joint_stamps: np.ndarray       # [M] float64
    joint_values: np.ndarray       # [M, n_joints]
    commands: 'Commands'
    joint_names: tuple
    action_names: tuple
    commands_from: str = ''        # e.g. '/leader/joint_states (sensor_msgs/msg/JointState)'
    hint_stamps: Optional[np.ndarray] = None   # [K] float64: hint times on the camera clock
    # several command topics: (topic, action names it commands) each, in action_names order
    command_groups: tuple = ()
    camera_transports: tuple = ()  # per camera 'raw' | 'compressed', as recorded
    joint_limits: dict = field(default_factory=dict)   # name -> (lower, upper), from a URDF
    image_sizes: dict = field(default_factory=dict)    # camera -> (h, w) the frames hold


def hint_flags(stamps: np.ndarray, hint_stamps: np.ndarray, frames: int) -> np.ndarray:
    """[N] bool: the first frame at or after each hint, and the `frames` - 1 frames after it.
    Hints more than a frame period before the first frame belong to an earlier episode."""
    flags = np.zeros(len(stamps), bool)
    hints = np.asarray(hint_stamps, np.float64)
    if len(stamps) > 1:
        hints = hints[hints >= stamps[0] - float(np.median(np.diff(stamps)))]
    for i in np.searchsorted(stamps, hints - 1e-6):
        flags[i:i + frames] = True
    return flags


@dataclass
class Aligned:
    """The rows of one episode: indices into each camera's frames, and what goes with them."""

    frame_rows: np.ndarray        # [N, n_cameras] int64: frame index in each camera's stream
    stamps: np.ndarray            # [N] float64 (the first camera's stamps)
    joints: np.ndarray            # [N, n_joints] float32
    actions: np.ndarray           # [N, chunk, n_actions] float32
    dropped: dict = field(default_factory=dict)   # reason -> frames dropped


def split_by_gap(stamps: np.ndarray, gap_s) -> list[tuple[int, int]]:
    """[start, end) index ranges of sorted `stamps` separated by gaps larger than gap_s."""
    if gap_s is None or len(stamps) == 0:
        return [(0, len(stamps))]
    cuts = np.flatnonzero(np.diff(stamps) > gap_s) + 1
    edges = [0, *cuts.tolist(), len(stamps)]
    return list(zip(edges[:-1], edges[1:], strict=False))


def median_period(stamp_lists: Sequence[np.ndarray]) -> float:
    """Median frame period over all episodes of the first camera (robust to dropped frames)."""
    diffs = [np.diff(np.unique(s)) for s in stamp_lists if len(s) > 1]
    diffs = np.concatenate(diffs) if diffs else np.empty(0)
    if len(diffs) == 0:
        raise DataError('cannot derive action_period_s: no episode has two camera frames; '
                        'set action_period_s')
    return float(np.median(diffs))


def _unique_sorted(stamps: np.ndarray) -> tuple[np.ndarray, int]:
    """Indices of stamps in time order, first of each repeated stamp kept; and how many not."""
    order = np.argsort(stamps, kind='stable')
    keep = np.insert(np.diff(stamps[order]) > 0, 0, True)
    return order[keep], int((~keep).sum())


def match_cameras(camera_stamps: Sequence[np.ndarray], skew_s: float) -> tuple[np.ndarray, int]:
    """[N, n_cameras] frame indices (first camera's frames in time order, each other camera's
    nearest within skew_s) and how many first-camera frames had no match in some camera."""
    first, _ = _unique_sorted(np.asarray(camera_stamps[0], np.float64))
    t = np.asarray(camera_stamps[0], np.float64)[first]
    rows = [first]
    ok = np.ones(len(first), bool)
    for stamps in camera_stamps[1:]:
        stamps = np.asarray(stamps, np.float64)
        order, _ = _unique_sorted(stamps)
        s = stamps[order]
        if len(s) == 0:
            return np.empty((0, len(camera_stamps)), np.int64), len(first)
        hi = np.clip(np.searchsorted(s, t), 0, len(s) - 1)
        lo = np.clip(hi - 1, 0, len(s) - 1)
        nearest = np.where(np.abs(s[lo] - t) <= np.abs(s[hi] - t), lo, hi)
        ok &= np.abs(s[nearest] - t) <= skew_s + EDGE_S
        rows.append(order[nearest])
    return np.stack(rows, axis=1)[ok].astype(np.int64), int((~ok).sum())


def check_overlap(name: str, frames: np.ndarray, what: str, stamps_start: float,
                  stamps_end: float) -> None:
    """DataError when the camera frames and another stream share no moment (wrong clock)."""
    if len(frames) and (frames[-1] < stamps_start or frames[0] > stamps_end):
        raise DataError(
            f'{name}: camera frames ({frames[0]:.3f}..{frames[-1]:.3f} s) and {what} '
            f'({stamps_start:.3f}..{stamps_end:.3f} s) do not overlap in time; are they stamped '
            'with the same clock (header stamps vs receive time, sim time vs wall time)?')


def align_episode(camera_stamps: Sequence[np.ndarray], joint_stamps: np.ndarray,
                  joint_values: np.ndarray, commands: Commands, *, chunk: int,
                  action_period_s: float, joint_tolerance_s: float,
                  camera_skew_s: float = 0.05) -> Aligned:
    """Align one episode's streams on the first camera's clock (rule in the module docstring)."""
    first = np.asarray(camera_stamps[0], np.float64)
    dropped = dict.fromkeys(DROP_REASONS, 0)
    _, dropped['duplicate_stamp'] = _unique_sorted(first)
    rows, dropped['camera_unmatched'] = match_cameras(camera_stamps, camera_skew_s)
    t = first[rows[:, 0]] if len(rows) else np.empty(0)

    joint_stamps = np.asarray(joint_stamps, np.float64)
    joint_values = np.asarray(joint_values).reshape(len(joint_stamps), -1)
    order = np.argsort(joint_stamps, kind='stable')
    js, jv = joint_stamps[order], joint_values[order]
    latest = np.searchsorted(js, t, side='right') - 1
    has = latest >= 0
    dropped['no_joint_state'] = int((~has).sum())
    age = np.where(has, t - js[np.clip(latest, 0, None)], np.inf)
    fresh = has & (age <= joint_tolerance_s + EDGE_S)
    dropped['stale_joints'] = int((has & ~fresh).sum())

    before = t < commands.start - EDGE_S
    after = t + chunk * action_period_s > commands.end + EDGE_S
    dropped['before_first_command'] = int((fresh & before).sum())
    dropped['after_last_command'] = int((fresh & ~before & after).sum())
    keep = fresh & ~before & ~after

    t, rows, latest = t[keep], rows[keep], latest[keep]
    offsets = (np.arange(1, chunk + 1) * action_period_s)[None, :]
    points = (t[:, None] + offsets).reshape(-1)
    n_actions = commands.at(np.zeros(1)).shape[1]
    actions = commands.at(points).reshape(len(t), chunk, n_actions) if len(t) else \
        np.empty((0, chunk, n_actions))
    return Aligned(frame_rows=rows, stamps=t,
                   joints=jv[latest].astype(np.float32),
                   actions=actions.astype(np.float32), dropped=dropped)
