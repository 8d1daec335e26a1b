"""Progress lines for the long loops of training: how far, how fast, how long still, and when done.

A tqdm bar turns itself off when stderr is not a terminal (`nohup`, a CI log, `2> train.log`),
which is exactly where a run of half an hour is watched. `Progress` writes plain lines instead,
at most one every `EVERY_S` seconds, so a log stays short:

    backbone: <done>/<total> steps (<share>), <rate> steps/s, ETA <time>; recon <loss>
    backbone: done, <total> steps in <time> (<rate> steps/s)
"""

import sys
import time
from typing import Iterator, Optional

EVERY_S = 10.0     # at most one progress line per this many seconds (the end line always)


def duration(seconds: float) -> str:
    """'42s', '3m05s', '1h02m'."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f'{seconds}s'
    if seconds < 3600:
        return f'{seconds // 60}m{seconds % 60:02d}s'
    return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m'


class Progress:
    """Counts `total` units of work named `what`; `update(n)` as they finish, `close()` at the end
    (iterating over it does both: `for i in Progress('x', 10, 'steps')`). `set_postfix` adds the
    latest numbers (a loss) to the next line."""

    def __init__(self, what: str, total: int, unit: str = 'it', stream=None,
                 enabled: bool = True, every_s: Optional[float] = None):
        self.what, self.total, self.unit = what, int(total), unit
        self.stream, self.enabled = stream, enabled
        self.every_s = EVERY_S if every_s is None else every_s
        self.done, self.info = 0, {}
        self.start = self.last = time.monotonic()
        self.closed = False

    def _write(self, line: str) -> None:
        if self.enabled:
            print(line, file=self.stream or sys.stderr, flush=True)

    def __iter__(self) -> Iterator[int]:
        try:
            for i in range(self.total):
                yield i
                self.update()
        finally:
            self.close()

    def set_postfix(self, info: Optional[dict] = None, **more) -> None:
        self.info = {**(info or {}), **more}

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last < self.every_s or self.done >= self.total:
            return
        self.last = now
        rate = self.done / max(now - self.start, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else float('inf')
        extra = '; ' + ', '.join(f'{k} {v}' for k, v in self.info.items()) if self.info else ''
        self._write(f'{self.what}: {self.done}/{self.total} {self.unit} '
                    f'({self.done / max(self.total, 1):.0%}), {rate:.3g} {self.unit}/s, '
                    f'ETA {duration(eta)}{extra}')

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        wall = time.monotonic() - self.start
        self._write(f'{self.what}: done, {self.done} {self.unit} in {duration(wall)} '
                    f'({self.done / max(wall, 1e-9):.3g} {self.unit}/s)')
