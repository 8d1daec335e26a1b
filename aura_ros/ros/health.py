"""Health bookkeeping of aura_node: per-reason warning throttle, problems in a recent window.

rclpy throttles a log call per call site, so one noisy rejection reason would hide every other;
`Throttle` keys by reason. `/diagnostics` must say what is wrong now, not whether anything ever
went wrong: `RecentProblems` counts problems by kind over the last `window_s` seconds.
Both are called from the worker and the executor thread, hence their locks.
"""

import threading
import time
from collections import Counter, deque


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
