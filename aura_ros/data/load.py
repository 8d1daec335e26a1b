"""load_demonstrations: any supported source -> Demonstrations, decoded once, then cached.

    demos = load_demonstrations('recordings/', DataConfig(chunk=8))

The source kind is detected: a folder with meta/info.json is a LeRobot dataset; a bag directory,
a .mcap/.db3 file or a folder of bags is rosbag2. The first load reads and decodes everything
(progress bars), aligns it on the camera clock (aura_ros.data.align) and writes the cache
(aura_ros.data.cache); a second load with the same files and config only maps the cache.
"""

import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Optional

import numpy as np
from tqdm import tqdm

from . import cache as cache_mod
from .align import (
    RawRecording,
    align_episode,
    check_overlap,
    hint_flags,
    median_period,
    split_by_gap,
)
from .config import DataConfig
from .demonstrations import DataError, Demonstrations
from .lerobot import is_lerobot_dataset, lerobot_files, read_lerobot
from .rosbag import bag_files, find_bags, group_name, read_bag, with_bag_cameras

log = logging.getLogger(__name__)


def detect_source(path) -> str:
    """'lerobot' or 'rosbag2' (DataError when it is neither)."""
    path = Path(path)
    if is_lerobot_dataset(path):
        return 'lerobot'
    find_bags(path)
    return 'rosbag2'


def source_files(path, kind: str) -> list[Path]:
    if kind == 'lerobot':
        return lerobot_files(Path(path))
    return [f for bag in find_bags(path) for f in bag_files(bag)]


def cache_entry(path, config: DataConfig) -> Path:
    """Where the cache of this source and config lives (whether built or not)."""
    path = Path(path)
    kind = detect_source(path)
    root = path if path.is_dir() else path.parent
    key = cache_mod.cache_key(kind, cache_mod.fingerprint(source_files(path, kind), root),
                              config.cache_fields())
    folder = Path(config.cache_dir) if config.cache_dir else cache_mod.default_cache_dir(path)
    return folder / key


def load_demonstrations(path, config: Optional[DataConfig] = None, *, progress: bool = True,
                        rebuild: bool = False) -> Demonstrations:
    """Demonstrations of a rosbag2 or LeRobot source, from the cache when it is up to date.

    path: bag directory, .mcap/.db3 file, folder of bags, or LeRobot v3.0 dataset root.
    config: DataConfig (default DataConfig()). progress: tqdm bars on stderr. rebuild: ignore
    an existing cache entry. Raises DataError naming the source and the problem.
    """
    config = config or DataConfig()
    path = Path(path)
    entry = cache_entry(path, config)
    if cache_mod.is_cached(entry) and not rebuild:
        return cache_mod.load_cached(entry)
    if rebuild:
        shutil.rmtree(entry, ignore_errors=True)
    entry.parent.mkdir(parents=True, exist_ok=True)
    work = entry.with_name(f'{entry.name}.spool-{os.getpid()}')   # one per process
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        recordings, cameras, period, source, read_as = _read(path, config, work, progress)
        _build(entry, recordings, cameras, period, source, read_as, progress)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    demos = cache_mod.load_cached(entry)
    _report(demos, progress)
    return demos


def _read(path: Path, config: DataConfig, work: Path, progress: bool):
    if is_lerobot_dataset(path):
        if config.hint_topic:
            raise DataError(f'{path}: hint_topic {config.hint_topic} is for rosbag2 sources; a '
                            'LeRobot dataset has no topics to mark frames with')
        read = read_lerobot(path, config, work, progress=progress)
        return read.recordings, read.cameras, read.action_period_s, read.source, config
    bags = find_bags(path)
    config = with_bag_cameras(bags[0], config)
    recordings: list[RawRecording] = []
    names: dict = {}
    for bag in tqdm(bags, desc='bags', unit='bag', disable=not progress or len(bags) < 2):
        rec = read_bag(bag, config, work, progress=progress, **names)
        names = {'joint_names': rec.joint_names, 'command_groups': rec.command_groups,
                 'image_sizes': rec.image_sizes}
        recordings.append(rec)
    storage = sorted({'mcap' if any(f.suffix == '.mcap' for f in bag_files(b)) else 'sqlite3'
                      for b in bags})
    period = config.action_period_s or median_period([r.camera_stamps[0] for r in recordings])
    source = f'{path} (rosbag2 {"+".join(storage)}, {len(bags)} bag(s), commands from ' \
             f'{recordings[0].commands_from})'
    return recordings, config.camera_names, period, source, config


def _segments(rec: RawRecording, config: DataConfig):
    """(name, first-camera frame indices) per episode: the recording, split at camera gaps."""
    first = rec.camera_stamps[0]
    order = np.argsort(first, kind='stable')
    ranges = split_by_gap(first[order], config.episode_gap_s)
    for j, (a, b) in enumerate(ranges):
        yield (rec.name if len(ranges) == 1 else f'{rec.name}#{j}'), order[a:b]


def _build(entry: Path, recordings, cameras, period: float, source: str, config: DataConfig,
           progress: bool) -> None:
    aligned, report = [], {'recordings': len(recordings), 'frames_read': 0, 'empty_episodes': 0}
    for rec in recordings:
        report['frames_read'] += len(rec.camera_stamps[0])
        for name, idx in _segments(rec, config):
            stamps = [rec.camera_stamps[0][idx], *rec.camera_stamps[1:]]
            t = stamps[0]
            check_overlap(name, t, 'joint states', rec.joint_stamps.min(),
                          rec.joint_stamps.max())
            check_overlap(name, t, f'commands {rec.commands_from}', rec.commands.start,
                          rec.commands.end)
            out = align_episode(stamps, rec.joint_stamps, rec.joint_values, rec.commands,
                                chunk=config.chunk, action_period_s=period,
                                joint_tolerance_s=config.joint_tolerance_s,
                                camera_skew_s=config.camera_skew_s)
            for reason, n in out.dropped.items():
                report[f'dropped_{reason}'] = report.get(f'dropped_{reason}', 0) + n
            if len(out.stamps) == 0:
                report['empty_episodes'] += 1
                continue
            out.frame_rows[:, 0] = idx[out.frame_rows[:, 0]]
            aligned.append((name, rec, out))
    if not aligned:
        drops = ', '.join(f'{k[8:]}: {v}' for k, v in report.items()
                          if k.startswith('dropped_') and v)
        raise DataError(f'{source}: empty dataset: no camera frame survived alignment '
                        f'({report["frames_read"]} frames read; dropped {drops or "none"}); '
                        'check the topics, joint_tolerance_s and that commands cover the frames')
    joint_names, action_names = recordings[0].joint_names, recordings[0].action_names
    total = sum(len(out.stamps) for _, _, out in aligned)
    report['episodes'], report['frames'] = len(aligned), total
    sizes = {c: tuple(recordings[0].image_sizes[c]) for c in cameras}
    builder = cache_mod.CacheBuilder(entry, total, cameras, sizes, len(joint_names),
                                     config.chunk, len(action_names))
    try:
        with cache_mod.progress_bar(total, 'cache', progress) as bar:
            for name, rec, out in aligned:
                fetch = [(lambda rows, f=frames, r=out.frame_rows[:, c]: f[r[rows]])
                         for c, frames in enumerate(rec.camera_frames)]
                hints = None if rec.hint_stamps is None else \
                    hint_flags(out.stamps, rec.hint_stamps, config.hint_frames)
                if hints is not None:
                    report['frames_hinted'] = report.get('frames_hinted', 0) + int(hints.sum())
                builder.add(name, out.stamps, out.joints, out.actions, fetch, bar, hints)
        first = recordings[0]
        limits = {k: list(v) for r in recordings for k, v in r.joint_limits.items()}
        builder.commit({'source': source, 'image_size': list(sizes[cameras[0]]),
                        'image_sizes': {c: list(v) for c, v in sizes.items()},
                        'joint_names': list(joint_names), 'action_names': list(action_names),
                        'action_groups': [[group_name(t), list(n)] for t, n in
                                          first.command_groups] if
                        len(first.command_groups) > 1 else [],
                        'camera_transports': list(first.camera_transports),
                        'joint_limits': limits,
                        'action_period_s': period, 'chunk': config.chunk, 'report': report,
                        'config': config.to_dict()})
    except BaseException:
        builder.abort()
        raise


def _report(demos: Demonstrations, progress: bool) -> None:
    r = demos.report
    drops = {k[8:]: v for k, v in r.items() if k.startswith('dropped_') and v}
    line = (f'{demos.source}: {r.get("episodes")} episodes, {r.get("frames")} of '
            f'{r.get("frames_read")} frames kept' +
            (f'; dropped {", ".join(f"{k}: {v}" for k, v in drops.items())}' if drops else '') +
            (f'; {r["frames_hinted"]} frames hinted' if 'frames_hinted' in r else ''))
    log.info(line)
    if progress:
        print(line, file=sys.stderr)
