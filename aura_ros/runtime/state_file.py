"""Crash-resume of the memory state: atomic, checksummed snapshots tied to one model.

A snapshot is a safetensors file holding W and b, with metadata: the format, a checksum of the
tensor bytes, the fingerprint of the model it belongs to (SHA-256 of the backbone and memory
files), and the episode's step and write counters. It is written to a temporary file, fsynced and
renamed over the old one, so a crash leaves either the old or the new snapshot, never a mix.

Loading never deletes anything: a corrupt, truncated or foreign file is renamed aside
(`<name>.rejected-<UTC time>`) with a reason, and the caller starts fresh.
"""

import hashlib
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save

from .model_dir import BACKBONE_FILE, MEMORY_FILE

FORMAT = 'aura_ros.state/1'


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
    with open(tmp, 'wb') as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
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


def set_aside(path: str | Path) -> Optional[Path]:
    """Rename a rejected snapshot out of the way (never delete it); returns the new path."""
    path = Path(path)
    if not path.exists():
        return None
    stamp = datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S.%fZ')
    aside = path.with_name(f'{path.name}.rejected-{stamp}')
    os.replace(path, aside)
    return aside
