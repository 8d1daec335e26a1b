"""Approximate-time matching of camera frames: one frame per camera, stamps within a skew.

A multi-camera model steps on a SET: one frame from every camera, all stamps within `max_skew_s`
of each other (cameras are rarely hardware-triggered, so exact stamps never match). Each camera
keeps its last few frames; every arrival tries to complete a set around the new frame, taking
from every other camera the buffered frame closest in time. A completed set consumes its frames
and everything older (an older frame can only make a staler set), so sets come out in time order
and each frame is used at most once.

A camera whose stamps go back (it restarted, or the clock jumped back) starts over: its waiting
frames are dropped (counted) and the new one is kept, so one bad stamp never blinds the matcher.
Frames that no set could ever use (too old, or far in the future) must be refused before `add`
(the node does, aura_ros/runtime/admission.py). A frame that leaves the buffer without being
part of a set (evicted by newer ones, older than a completed set, or dropped by a restart) is
counted in `unmatched[camera]`: that is the node's "incomplete set"
count, what a stalled or badly skewed camera shows up as. Pure Python, no ROS, no clock of its
own: stamps are whatever the frames carry (seconds).
"""

from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Optional, Sequence


@dataclass(frozen=True)
class Frame:
    stamp: float
    item: Any


class FrameMatcher:
    """add(camera, stamp, item) -> {camera: Frame} when a set completes, else None."""

    def __init__(self, cameras: Sequence[str], max_skew_s: float, depth: int = 4):
        cameras = tuple(cameras)
        if not cameras or len(set(cameras)) != len(cameras):
            raise ValueError(f'cameras must be distinct names, got {list(cameras)}')
        if not max_skew_s >= 0:
            raise ValueError(f'max_skew_s must be >= 0, got {max_skew_s!r}')
        if depth < 1:
            raise ValueError(f'depth must be >= 1, got {depth!r}')
        self.cameras, self.max_skew_s = cameras, float(max_skew_s)
        self._buffers = {c: deque() for c in cameras}
        self._depth = depth
        self.matched = 0                 # sets completed
        self.unmatched: Counter = Counter()   # per camera: frames that never made a set
        self.restarts: Counter = Counter()    # per camera: times its stamps went back

    def add(self, camera: str, stamp: float, item: Any) -> Optional[dict[str, Frame]]:
        if camera not in self._buffers:
            raise KeyError(f'unknown camera {camera!r}; known: {list(self.cameras)}')
        buffer = self._buffers[camera]
        if buffer and stamp == buffer[-1].stamp:      # repeated: never usable
            self.unmatched[camera] += 1
            return None
        if buffer and stamp < buffer[-1].stamp:
            # stamps went back (the camera restarted, or the clock): its waiting frames are
            # from a time that will not come again, and refusing every later frame until the
            # stamps pass them would blind the node; start this camera over from this frame
            self.unmatched[camera] += len(buffer)
            self.restarts[camera] += 1
            buffer.clear()
        frame = Frame(float(stamp), item)
        buffer.append(frame)
        if len(buffer) > self._depth:
            buffer.popleft()
            self.unmatched[camera] += 1
        chosen = {camera: frame}
        for other in self.cameras:
            if other == camera:
                continue
            candidates = self._buffers[other]
            if not candidates:
                return None
            chosen[other] = min(candidates, key=lambda f: abs(f.stamp - frame.stamp))
        stamps = [f.stamp for f in chosen.values()]
        if max(stamps) - min(stamps) > self.max_skew_s:
            return None
        for name, used in chosen.items():
            self._consume(name, used.stamp)
        self.matched += 1
        return chosen

    def _consume(self, camera: str, stamp: float) -> None:
        """Drop the used frame and every older one (those never made a set: counted)."""
        buffer = self._buffers[camera]
        while buffer and buffer[0].stamp <= stamp:
            frame = buffer.popleft()
            if frame.stamp < stamp:
                self.unmatched[camera] += 1

    def pending(self) -> dict[str, int]:
        """Frames waiting per camera."""
        return {c: len(b) for c, b in self._buffers.items()}

    def clear(self) -> None:
        """Forget buffered frames (a reset or deactivation); counters are kept."""
        for buffer in self._buffers.values():
            buffer.clear()
