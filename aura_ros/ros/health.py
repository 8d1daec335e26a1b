"""Health bookkeeping of aura_node: per-reason warning throttle, problems in a recent window.

rclpy throttles a log call per call site, so one noisy rejection reason would hide every other;
`Throttle` keys by reason. `/diagnostics` must say what is wrong now, not whether anything ever
went wrong: `RecentProblems` counts problems by kind over the last `window_s` seconds. Both are
called from the worker and the executor thread, hence their locks. `ProblemLog` is the two
together: what the node, its worker and its checks report. `RobotCounters` are one robot's
counters (a fleet node has one per robot).
"""

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

LATENCY_SAMPLES = 2000             # recent steps kept for the latency percentiles
LOG_MESSAGE_CHARS = 400            # a warning built from peer input is cut to this


class Throttle:
    """One warning per key per `period_s` (rclpy throttles per call site, not per reason)."""

    def __init__(self, period_s: float):
        self.period_s = period_s
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def ready(self, key: str) -> bool:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(key, -float('inf')) < self.period_s:
                return False
            self._last[key] = now
            return True


class RecentProblems:
    """Counts of problems by kind over the last `window_s` seconds, in small time buckets."""

    def __init__(self, window_s: float):
        self.window_s = window_s
        self._bucket_s = min(1.0, window_s / 10)
        self._buckets: deque[tuple[int, Counter]] = deque()
        self._lock = threading.Lock()

    def add(self, kind: str) -> None:
        now = int(time.monotonic() / self._bucket_s)
        with self._lock:
            if not self._buckets or self._buckets[-1][0] != now:
                self._buckets.append((now, Counter()))
            self._buckets[-1][1][kind] += 1
            self._trim(now)

    def counts(self) -> Counter:
        with self._lock:
            self._trim(int(time.monotonic() / self._bucket_s))
            total = Counter()
            for _, counts in self._buckets:
                total.update(counts)
            return total

    def _trim(self, now: int) -> None:
        oldest = now - int(round(self.window_s / self._bucket_s))
        while self._buckets and self._buckets[0][0] <= oldest:
            self._buckets.popleft()


class ProblemLog:
    """Problems recorded for /diagnostics (`recent`) and warned about on `log`, at most once per
    `throttle_s` per key."""

    def __init__(self, log, throttle_s: float, window_s: float):
        self.log = log
        self.throttle = Throttle(throttle_s)
        self.recent = RecentProblems(window_s)

    def report(self, reason: str, message: Callable[[], str], key: str = '') -> None:
        """Record a problem and warn about it, throttled per `key` (default: the reason); the
        message is built only when it is logged."""
        self.recent.add(reason)
        if self.throttle.ready(key or reason):
            self.log.warning(message())

    def reject(self, robot, err, image: bool) -> None:
        """Count a rejected image or joint state (an InputError) by reason, for its robot;
        warn, throttled per reason (and robot)."""
        robot.counters.reject(err.reason, image)
        robot.problems.add(err.reason)
        whose = f'{robot.name}: ' if robot.name else ''

        def message() -> str:
            text = str(err)
            if len(text) > LOG_MESSAGE_CHARS:
                text = f'{text[:LOG_MESSAGE_CHARS]}... ({len(text)} chars)'
            return f'{whose}rejected {"image" if image else "joint state"} ({err.reason}): {text}'

        self.report(err.reason, message, key=f'{err.reason} {robot.name}'.strip())


@dataclass
class RobotCounters:
    """One robot's input and step counters and its recent step times, as /diagnostics shows them.

    The worker appends to the latency buffers while the diagnostics timer reads them: `values`
    copies each with list() first (atomic under the GIL), so a long run can never hit 'deque
    mutated during iteration'.
    """

    received: int = 0
    dropped: int = 0                   # an unprocessed observation replaced by a newer one
    rejected: Counter = field(default_factory=Counter)     # by reason, images and joint states
    images_rejected: int = 0
    joint_states_received: int = 0
    joint_states_rejected: int = 0
    nonfinite_discarded: int = 0       # steps whose non-finite new state was dropped
    clipped: int = 0                   # target values clipped to the joint limits
    chunks_expired: int = 0            # chunks whose every point had passed
    points_dropped: int = 0            # chunk points left out as already past
    publish_failures: int = 0          # committed steps whose publishing failed
    latencies: deque = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))
    stage_times: dict = field(default_factory=dict)

    def reject(self, reason: str, image: bool) -> None:
        self.rejected[reason] += 1
        if image:
            self.images_rejected += 1
        else:
            self.joint_states_rejected += 1

    def record(self, stages: dict, latency_s: float) -> None:
        """One published step: its stage times and its latency (receipt to publish), seconds."""
        for name, seconds in stages.items():
            self.stage_times.setdefault(name, deque(maxlen=LATENCY_SAMPLES)).append(seconds)
        self.latencies.append(latency_s)

    def step_time(self) -> float:
        """The median time of the recent steps (receipt to publish), seconds; 0 before any."""
        times = list(self.latencies)
        return float(np.median(times)) if times else 0.0

    def values(self) -> dict:
        latencies = np.asarray(list(self.latencies)) * 1e3
        values = {'frames_received': self.received, 'frames_dropped': self.dropped,
                  'frames_rejected': self.images_rejected,
                  'joint_states_received': self.joint_states_received,
                  'joint_states_rejected': self.joint_states_rejected,
                  'nonfinite_state_discarded': self.nonfinite_discarded,
                  'targets_clipped': self.clipped, 'chunks_expired': self.chunks_expired,
                  'chunk_points_dropped': self.points_dropped,
                  'publish_failures': self.publish_failures}
        if latencies.size:
            values['latency_p50_ms'] = float(np.percentile(latencies, 50))
            values['latency_p99_ms'] = float(np.percentile(latencies, 99))
        for name, times in list(self.stage_times.items()):
            values[f'stage_{name}_p50_ms'] = float(np.median(list(times))) * 1e3
        for reason, count in sorted(list(self.rejected.items())):
            values[f'rejected_{reason}'] = count
        return values


class DeliveryLedger:
    """Messages lost on the way, told apart from messages the node itself did not take.

    Per (topic, publisher) it keeps the last sequence number seen (rmw's message info, a plain
    dict here). A gap is the node's own (`missed_by_node`), not transport's
    (`lost_in_transport`), when the node was not taking since that publisher's previous message:
    it was inactive, a reset or deactivation held the executor (`pause`), or the executor ran
    none of the node's callbacks for longer than `stall_s`: the messages were overwritten in the
    node's own input queue. Messages lost after the last one received stay invisible until the
    next one comes. A message seen twice (the second copy while input_qos auto replaces a
    subscription) is not fresh.
    """

    def __init__(self, stall_s: float):
        self.stall_s = stall_s
        self.lost_in_transport = 0
        self.missed_by_node = 0
        self.epoch = 0                 # +1 whenever the node stops or starts taking
        self._last: dict = {}          # (topic, publisher) -> sequence number
        self._taken: dict = {}         # (topic, publisher) -> epoch of its last take
        self._seen = time.monotonic()  # the executor last ran one of the node's callbacks

    def pause(self) -> None:
        """The node stopped or started taking: a gap across this is the node's own."""
        self.epoch += 1

    def forget(self) -> None:
        """A new configure: sequence numbers start over (the counts stay)."""
        self._last = {}

    def _stalled(self) -> bool:
        now = time.monotonic()
        stalled = now - self._seen > self.stall_s
        self._seen = now
        return stalled

    def executor_ran(self) -> None:
        """The health timer ran: a stall seen here is a pause for every topic."""
        if self._stalled():
            self.pause()

    def take(self, topic: str, info: dict, count_loss: bool = True) -> tuple[bool, int]:
        """(fresh, lost in transport just before it) for a message with `info`."""
        stalled = self._stalled()
        sequence = info.get('publication_sequence_number') if info else None
        if not sequence:
            return True, 0
        gid = info.get('publisher_gid')
        known = isinstance(gid, dict) and 'data' in gid     # else: all publishers share a key
        key = (topic, bytes(gid['data']) if known else None)
        last = self._last.get(key)
        if known and last is not None and sequence <= last:
            return False, 0
        self._last[key] = sequence if last is None else max(last, sequence)
        paused = stalled or self._taken.get(key, self.epoch) != self.epoch
        self._taken[key] = self.epoch
        if not count_loss or last is None or sequence <= last + 1:
            return True, 0
        if paused:
            self.missed_by_node += sequence - last - 1
            return True, 0
        self.lost_in_transport += sequence - last - 1
        return True, sequence - last - 1
