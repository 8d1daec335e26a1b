"""Crash-resume policy of one robot's memory: which snapshot to resume, what is refused, saving.

The snapshot file format and its atomic writes are state_file.py; this is the policy around it,
without ROS, for one row of a runtime (one robot; a fleet has one per robot):

- at configure (`open`): take the file's lock (a second node on it is refused), refuse a file
  there that is not a snapshot (the user's: never touched) and a folder that cannot be written,
  resume a good snapshot of this model (state and step/write counters through
  `AuraRuntime.resume`), set a bad one aside and start fresh; a bad one that cannot be set aside
  turns saving off for the run (`status` says why) rather than overwrite it;
- while running (`save`): snapshot after a write, a reset and at shutdown, counting saves, bytes
  and failures (a failed save is reported, never fatal).
"""

import os
from typing import Optional, Protocol

from .state_file import (
    StateFileError,
    StateFileInUse,
    StateFileLock,
    is_snapshot,
    probe_writable,
    read_snapshot,
    save_snapshot,
    set_aside,
)


class CrashResumeRefused(ValueError):
    """The state file setting cannot be used: the node must not start (the message says why)."""


class Log(Protocol):
    def info(self, message: str) -> None: ...

    def warning(self, message: str) -> None: ...


class CrashResume:
    """Snapshots of row `row` of a runtime (None: its one robot) at `path`.

    `status` is 'on', or 'off' with the reason; `saves`, `bytes_written` and `save_failures`
    count over the object's life (every configure of a node).
    """

    def __init__(self, path: str, log: Log, row: Optional[int] = None):
        self.path, self.log, self.row = path, log, row
        self.status = 'off'
        self.saves = self.bytes_written = self.save_failures = 0
        self._saving = False
        self._fingerprint = ''
        self._lock: Optional[StateFileLock] = None

    def open(self, runtime, fingerprint: str) -> None:
        """Resume from the file if it holds this model's snapshot and check it can be saved;
        CrashResumeRefused when the node must not start."""
        path, self._fingerprint = self.path, fingerprint
        try:
            self._lock = StateFileLock(path)
        except StateFileInUse as err:
            raise CrashResumeRefused(str(err)) from None
        except OSError as err:                     # no usable temporary folder: go on
            self.log.warning(f'state_file {path}: could not take its lock '
                             f'({err.strerror or err}); a second node on this file would not be '
                             'refused')
        if os.path.exists(path) and not is_snapshot(path):
            raise CrashResumeRefused(f'{path} exists and is not an aura_ros state file; not '
                                     'touching it (move it away or choose another path)')
        if os.path.exists(path):
            if not self._resume(runtime):
                return
        else:
            self.log.info(f'state_file {path} does not exist yet: starting fresh')
        folder = os.path.dirname(os.path.abspath(path))
        err = probe_writable(folder)
        if err is not None:
            raise CrashResumeRefused(f'cannot write in {folder} ({err.strerror or err})')
        self._saving = True
        self.status = 'on'

    def _resume(self, runtime) -> bool:
        """Continue the saved episode; False when a bad snapshot could not be set aside."""
        path = self.path
        shapes = {k: v.shape for k, v in runtime.state_dict(self.row).items()}
        try:
            snapshot = read_snapshot(path, self._fingerprint, shapes)
        except StateFileError as err:
            try:
                aside = set_aside(path)
            except OSError as move:
                self.status = (f'off: {path} is unusable ({err}) and could not be set aside '
                               f'({move.strerror or move})')
                self.log.warning(f'state_file {path} not used: {err}; it could not be set aside '
                                 f'({move.strerror or move}) and will not be overwritten: '
                                 'crash-resume is off for this run; starting fresh')
                return False
            self.log.warning(f'state_file {path} not used: {err}; kept aside as {aside}; '
                             'starting fresh')
            return True
        runtime.resume(snapshot.state, snapshot.steps, snapshot.writes, row=self.row)
        self.log.info(f'resumed the memory state from {path}: {snapshot.steps} steps, '
                      f'{snapshot.writes} writes')
        return True

    def save(self, runtime) -> Optional[OSError]:
        """Snapshot the row now (when saving is on); the error of a failed save, counted."""
        if not self._saving:
            return None
        counters = runtime.counters[self.row or 0]
        try:
            self.bytes_written += save_snapshot(self.path, runtime.state_dict(self.row),
                                                self._fingerprint, counters.steps,
                                                counters.writes)
        except OSError as err:
            self.save_failures += 1
            return err
        self.saves += 1
        return None

    def release(self) -> None:
        """Stop saving and drop the file's lock (the model is being released)."""
        self._saving = False
        self.status = 'off'
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def values(self) -> dict:
        """The crash-resume part of the node's health values."""
        return {'state_saves': self.saves, 'state_bytes_written': self.bytes_written,
                'state_save_failures': self.save_failures}
