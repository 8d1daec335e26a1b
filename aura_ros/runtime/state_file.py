"""Crash-resume of the memory state: atomic, checksummed snapshots tied to one model.

A snapshot is a safetensors file holding W and b, with metadata: the format, a checksum of the
tensor bytes, the fingerprint of the model it belongs to (SHA-256 of the backbone and memory
files), and the episode's step and write counters. It is written to a temporary file, fsynced and
renamed over the old one, so a crash leaves either the old or the new snapshot, never a mix.

Loading never deletes anything: a corrupt, truncated or foreign snapshot is renamed aside
(`<name>.rejected-<UTC time>`) with a reason, and the caller starts fresh. Only a file whose
header says it is a snapshot (`is_snapshot`) is ever renamed: anything else at that path is the
user's, and the caller refuses to start rather than touch it.
"""

import fcntl
import hashlib
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save

from .model_dir import BACKBONE_FILE, MEMORY_FILE

FORMAT = 'aura_ros.state/1'
_MARK = b'aura_ros.state/'          # in the header of every snapshot format, this one and later
_HEADER_PEEK = 4096                 # the format is the header's first metadata entry


class StateFileError(ValueError):
    """A snapshot that cannot be used: unreadable, corrupt, or from another model."""


def model_fingerprint(model_dir: str | Path) -> str:
    """SHA-256 over the backbone and memory files: a state only means something for both."""
    digest = hashlib.sha256()
    for name in (BACKBONE_FILE, MEMORY_FILE):
        digest.update(name.encode())
        digest.update(Path(model_dir, name).read_bytes())
    return digest.hexdigest()


def _checksum(state: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(state[name], dtype=np.float32).tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class Snapshot:
    state: dict[str, np.ndarray]
    steps: int
    writes: int


def save_snapshot(path: str | Path, state: dict[str, np.ndarray], fingerprint: str,
                  steps: int, writes: int) -> int:
    """Write atomically (temp file, fsync, rename, fsync the folder); returns the bytes written."""
    path = Path(path)
    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}
    data = save(tensors, metadata={'format': FORMAT, 'checksum': _checksum(tensors),
                                   'fingerprint': fingerprint, 'steps': str(steps),
                                   'writes': str(writes)})
    tmp = path.with_name(f'.{path.name}.tmp-{os.getpid()}')
    try:
        with open(tmp, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)      # a full disk must not collect empty temp files
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
    return len(data)


def read_snapshot(path: str | Path, fingerprint: str,
                  shapes: dict[str, tuple[int, ...]]) -> Snapshot:
    """The snapshot at `path`, checked against the model; StateFileError says what is wrong."""
    try:
        with safe_open(str(path), framework='numpy') as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors raises its own types for truncated/corrupt files
        raise StateFileError(f'unreadable ({err})') from err
    if meta.get('format') != FORMAT:
        raise StateFileError(f'format is {meta.get("format")!r}, expected {FORMAT!r}')
    if meta.get('fingerprint') != fingerprint:
        raise StateFileError('it belongs to another model (fingerprint '
                             f'{str(meta.get("fingerprint"))[:12]}..., this model '
                             f'{fingerprint[:12]}...)')
    if meta.get('checksum') != _checksum(state):
        raise StateFileError('checksum mismatch: the file is corrupt')
    actual = {k: tuple(v.shape) for k, v in state.items()}
    if actual != shapes:
        raise StateFileError(f'tensor shapes {actual} do not match the model ({shapes})')
    if not all(np.isfinite(v).all() for v in state.values()):
        raise StateFileError('non-finite values in the state')
    try:
        return Snapshot(state, int(meta['steps']), int(meta['writes']))
    except (KeyError, ValueError) as err:
        raise StateFileError(f'bad counters in metadata ({err})') from err


def is_snapshot(path: str | Path) -> bool:
    """Whether `path` is a regular file whose safetensors header names a snapshot format.

    Only the header is read, so a snapshot truncated or corrupted after its header still counts
    (it is ours to set aside); a directory, a device or a user's file never does.
    """
    path = Path(path)
    if not path.is_file():
        return False
    try:
        with open(path, 'rb') as f:
            head = f.read(8 + _HEADER_PEEK)
    except OSError:
        return False
    size = int.from_bytes(head[:8], 'little') if len(head) >= 8 else 0
    return 0 < size < 100_000_000 and head[8:9] == b'{' and _MARK in head[8:8 + size]


def probe_writable(folder: str | Path) -> Optional[OSError]:
    """Create and remove a file in `folder`: None if that works, else the error.

    A real try, not os.access: a read-only mount, a full inode table or a root process that
    permission bits do not stop all answer truthfully only to an actual creation.
    """
    probe = Path(folder, f'.aura_ros-probe-{os.getpid()}')
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        probe.unlink()
    except OSError as err:
        return err
    return None


def set_aside(path: str | Path) -> Optional[Path]:
    """Rename a rejected snapshot out of the way (never delete it); returns the new path.

    Refuses (StateFileError) anything that is not a snapshot: a user's file stays where it is.
    OSError when the rename fails (read-only folder): the file is then left as it was.
    """
    path = Path(path)
    if not path.exists():
        return None
    if not is_snapshot(path):
        raise StateFileError(f'{path} is not an aura_ros state file: not moved')
    stamp = datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S.%fZ')
    aside = path.with_name(f'{path.name}.rejected-{stamp}')
    os.replace(path, aside)
    return aside


class StateFileInUse(StateFileError):
    """Another process (or node) holds the state file's lock."""


class StateFileLock:
    """An advisory lock (fcntl.flock), held while a node uses a state file.

    Two nodes saving one state file would overwrite each other's episode (last writer wins):
    the second is refused at start. The lock is a file in the temporary folder named after the
    state file's real path (nothing is added beside the state file, which may be on a read-only
    or full file system); it holds the holder's pid, so the refusal can name it. The kernel drops
    the lock when its holder exits, however it exits, so a stale lock file never blocks anyone.
    flock locks belong to the open file, so two nodes in one process exclude each other too.
    Nodes that do not share the temporary folder (containers) are not excluded.
    """

    def __init__(self, path: str | Path):
        real = os.path.realpath(path)
        digest = hashlib.sha256(real.encode()).hexdigest()[:16]
        self.path = os.path.join(tempfile.gettempdir(), f'aura_ros-state-{digest}.lock')
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors='replace').split()
            os.close(fd)
            pid = holder[0] if holder and holder[0].isdigit() else 'unknown'
            raise StateFileInUse(f'{path} is in use by another aura_node (pid {pid}; lock '
                                 f'{self.path}): one state file per node') from None
        except OSError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f'{os.getpid()} {real}\n'.encode(), 0)
        self._fd: Optional[int] = fd

    def release(self) -> None:
        """Unlock (closing the file drops the lock); the lock file stays, harmlessly."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
