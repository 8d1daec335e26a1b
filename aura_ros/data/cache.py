"""The decode cache: aligned demonstrations as memory-mapped .npy files, decoded once.

Decoding video or thousands of bag images takes minutes; an epoch must not. The first load writes
    <cache_dir>/<key>/manifest.json            names, timing, episode boundaries, the report
    <cache_dir>/<key>/stamps.npy               [N] float64, all episodes back to back
    <cache_dir>/<key>/joints.npy               [N, n_joints] float32
    <cache_dir>/<key>/actions.npy              [N, chunk, n_actions] float32
    <cache_dir>/<key>/images.<camera>.npy      [N, H, W, 3] uint8 at the model size
and every later load maps them (np.load mmap_mode='r'): no decode, pages read on demand.

The key hashes the source files' names, sizes and mtimes, the config fields that change the
content, and CACHE_VERSION, so editing a bag or the config makes a new entry instead of serving
a stale one. An entry is built in a temporary folder and renamed into place: an interrupted
build leaves no half entry.
"""

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from tqdm import tqdm

from .demonstrations import Demonstrations, Episode

CACHE_VERSION = 1
MANIFEST = 'manifest.json'


def fingerprint(files: Sequence[Path], root: Path) -> list:
    """(path relative to root, size, mtime_ns) of every source file, sorted."""
    out = []
    for f in files:
        st = Path(f).stat()
        try:
            rel = str(Path(f).resolve().relative_to(Path(root).resolve()))
        except ValueError:
            rel = str(Path(f).resolve())
        out.append([rel, st.st_size, st.st_mtime_ns])
    return sorted(out)


def cache_key(kind: str, files: list, config_fields: dict) -> str:
    blob = json.dumps({'version': CACHE_VERSION, 'kind': kind, 'files': files,
                       'config': config_fields}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _writable(folder: Path) -> bool:
    while not folder.exists():
        folder = folder.parent
    return os.access(folder, os.W_OK | os.X_OK)


def default_cache_dir(source: Path) -> Path:
    """<source folder>/.aura_cache, or ~/.cache/aura_ros when the source is read-only."""
    source = Path(source).resolve()
    folder = source if source.is_dir() else source.parent
    local = folder / '.aura_cache'
    if _writable(local):
        return local
    return Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache')) / 'aura_ros'


class CacheBuilder:
    """Writes one cache entry: `add` each episode's rows, then `commit` renames it into place."""

    def __init__(self, entry: Path, total: int, cameras: Sequence[str], image_size, n_joints: int,
                 chunk: int, n_actions: int):
        self.entry = Path(entry)
        self.tmp = self.entry.with_name(f'{self.entry.name}.tmp-{os.getpid()}')
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self.cameras = tuple(cameras)
        sizes = image_size if isinstance(image_size, dict) else \
            dict.fromkeys(self.cameras, image_size)        # one (h, w), or one per camera
        self.images = {c: np.lib.format.open_memmap(self.tmp / f'images.{c}.npy', 'w+',
                                                    np.uint8, (total, *sizes[c], 3))
                       for c in self.cameras}
        self.stamps = np.zeros(total, np.float64)
        self.joints = np.zeros((total, n_joints), np.float32)
        self.actions = np.zeros((total, chunk, n_actions), np.float32)
        self.hints: Optional[np.ndarray] = None
        self.episodes: list[dict] = []
        self.pos = 0

    def add(self, name: str, stamps, joints, actions, frames: Sequence[Callable],
            progress=None, hints=None) -> None:
        """frames[c](rows) -> [len(rows), H, W, 3] uint8 for camera c; copied in blocks.
        hints: [n] bool frames marked by the hint topic (None: the source has no hints)."""
        n, start = len(stamps), self.pos
        if hints is not None:
            if self.hints is None:
                self.hints = np.zeros(len(self.stamps), bool)
            self.hints[start:start + n] = hints
        self.stamps[start:start + n] = stamps
        self.joints[start:start + n] = joints
        self.actions[start:start + n] = actions
        for block in range(0, n, 256):
            rows = np.arange(block, min(n, block + 256))
            for cam, fetch in zip(self.cameras, frames, strict=False):
                self.images[cam][start + block: start + block + len(rows)] = fetch(rows)
            if progress is not None:
                progress.update(len(rows))
        self.episodes.append({'name': name, 'start': start, 'length': n})
        self.pos += n

    def commit(self, meta: dict) -> Path:
        for array in self.images.values():
            array.flush()
        np.save(self.tmp / 'stamps.npy', self.stamps[:self.pos])
        np.save(self.tmp / 'joints.npy', self.joints[:self.pos])
        np.save(self.tmp / 'actions.npy', self.actions[:self.pos])
        if self.hints is not None:
            np.save(self.tmp / 'hints.npy', self.hints[:self.pos])
        manifest = {**meta, 'cache_version': CACHE_VERSION, 'cameras': list(self.cameras),
                    'episodes': self.episodes}
        (self.tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        self.images.clear()
        try:
            os.replace(self.tmp, self.entry)
        except OSError:          # another process built the same entry first: keep theirs
            shutil.rmtree(self.tmp, ignore_errors=True)
        return self.entry

    def abort(self) -> None:
        self.images.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)


def is_cached(entry: Path) -> bool:
    return (Path(entry) / MANIFEST).is_file()


def load_cached(entry: Path) -> Demonstrations:
    """Map a cache entry as Demonstrations (images stay on disk as np.memmap)."""
    entry = Path(entry)
    meta = json.loads((entry / MANIFEST).read_text())
    stamps = np.load(entry / 'stamps.npy', allow_pickle=False)
    joints = np.load(entry / 'joints.npy', mmap_mode='r', allow_pickle=False)
    actions = np.load(entry / 'actions.npy', mmap_mode='r', allow_pickle=False)
    images = {c: np.load(entry / f'images.{c}.npy', mmap_mode='r', allow_pickle=False)
              for c in meta['cameras']}
    hints = np.load(entry / 'hints.npy', allow_pickle=False) \
        if (entry / 'hints.npy').is_file() else None
    episodes = []
    for ep in meta['episodes']:
        sl = slice(ep['start'], ep['start'] + ep['length'])
        episodes.append(Episode(name=ep['name'], stamps=stamps[sl],
                                images={c: a[sl] for c, a in images.items()},
                                joints=joints[sl], actions=actions[sl],
                                hints=None if hints is None else hints[sl]))
    return Demonstrations(source=meta['source'], cameras=tuple(meta['cameras']),
                          image_size=tuple(meta['image_size']),
                          image_sizes={c: tuple(v) for c, v in
                                       meta.get('image_sizes', {}).items()},
                          joint_names=tuple(meta['joint_names']),
                          action_names=tuple(meta['action_names']),
                          action_period_s=meta['action_period_s'], chunk=meta['chunk'],
                          episodes=episodes, report={**meta['report'], 'cache': str(entry)},
                          action_groups=tuple((g, tuple(n)) for g, n in
                                              meta.get('action_groups', [])),
                          camera_transports=tuple(meta.get('camera_transports', [])),
                          joint_limits={k: tuple(v) for k, v in
                                        meta.get('joint_limits', {}).items()})


def progress_bar(total: int, desc: str, enabled: bool):
    return tqdm(total=total, desc=desc, unit='frame', disable=not enabled, leave=False)
