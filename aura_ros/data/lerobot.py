"""LeRobot datasets (format v3.0, as lerobot writes them today; v2.1 too) -> raw recordings.

v3.0 layout (checked against lerobot's own writer, src/lerobot/datasets/):
    meta/info.json                           codebase_version, fps, features, data_path, video_path
    meta/stats.json, meta/tasks.parquet      (not needed here)
    meta/episodes/chunk-XXX/file-XXX.parquet one row per episode: episode_index, length,
                                             data/chunk_index, data/file_index,
                                             videos/<key>/{chunk_index,file_index,
                                             from_timestamp,to_timestamp}, stats/...
    data/chunk-XXX/file-XXX.parquet          many episodes per file: timestamp (episode-relative),
                                             frame_index, episode_index, index, task_index,
                                             observation.state, action, image features
    videos/<key>/chunk-XXX/file-XXX.mp4      many episodes per file, back to back: frame j of
                                             episode e is at from_timestamp(e) + timestamp(j)
v2.1: meta/episodes.jsonl, data/chunk-XXX/episode_XXXXXX.parquet and one mp4 per episode
(videos/chunk-XXX/<key>/episode_XXXXXX.mp4), found through info.json's path templates.

Keys: cameras are the 'video' and 'image' features (observation.images.<cam>), joints
'observation.state', commands 'action'; column names from features[...]['names']. The action at
frame j is what was commanded at its timestamp, so the same alignment rule applies as for bags.
Video is decoded with PyAV, each file once, front to back: AV1 (lerobot's default), H.264, HEVC.
"""

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from tqdm import tqdm

from .align import RawRecording, SampledCommands
from .config import DEFAULT_IMAGE_TOPICS, DataConfig, camera_names_from_topics
from .demonstrations import DataError
from .images import FrameSpool, Resizer

SUPPORTED_CODECS = ('av1', 'h264', 'hevc')
STATE, ACTION = 'observation.state', 'action'


@dataclass
class LeRobotRead:
    recordings: list
    cameras: tuple
    action_period_s: float
    source: str


def is_lerobot_dataset(path) -> bool:
    return (Path(path) / 'meta' / 'info.json').is_file()


def lerobot_files(root: Path) -> list[Path]:
    """The files whose size and mtime identify the dataset's content (for the cache key)."""
    root = Path(root)
    files = [root / 'meta' / 'info.json']
    for sub, pattern in (('meta', '**/*.parquet'), ('meta', '*.jsonl'), ('data', '**/*.parquet'),
                         ('videos', '**/*.mp4')):
        if (root / sub).is_dir():
            files += sorted((root / sub).glob(pattern))
    return files


class _Rows:
    """frames[rows] of a shared spool through an episode's own row table (no copy)."""

    def __init__(self, frames: Optional[np.ndarray], rows: np.ndarray):
        self.frames, self.rows = frames, rows
        self.camera = 0

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index) -> np.ndarray:
        return self.frames[self.rows[index]]


def _names(info: dict, key: str, where: str) -> tuple:
    feature = info['features'].get(key)
    if feature is None:
        raise DataError(f'{where}: meta/info.json has no {key!r} feature; features: '
                        f'{", ".join(info["features"])}')
    names = feature.get('names')
    if isinstance(names, dict):      # older datasets: {'motors': [...]}
        names = next(iter(names.values()), None)
    n = int(np.prod(feature.get('shape') or [1]))
    if not names or len(names) != n:
        return tuple(f'{key.split(".")[-1]}_{i}' for i in range(n))
    return tuple(str(x) for x in names)


def _columns(available: tuple, wanted: Optional[tuple], key: str, where: str) -> np.ndarray:
    if wanted is None:
        return np.arange(len(available))
    missing = [n for n in wanted if n not in available]
    if missing:
        raise DataError(f'{where}: {key} has no column(s) named {", ".join(missing)}; its names: '
                        f'{", ".join(available)}')
    return np.array([available.index(n) for n in wanted])


def _read_table(files: list[Path], columns: Optional[list] = None):
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [pq.read_table(f, columns=columns) for f in files]
    return pa.concat_tables(tables, promote_options='default') if len(tables) > 1 else tables[0]


def _matrix(column) -> np.ndarray:
    """A list / fixed-size-list arrow column -> [rows, n] float64."""
    import pyarrow as pa

    column = column.combine_chunks() if hasattr(column, 'combine_chunks') else column
    if pa.types.is_fixed_size_list(column.type) or pa.types.is_list(column.type) or \
            pa.types.is_large_list(column.type):
        return np.asarray(column.flatten().to_numpy(zero_copy_only=False),
                          np.float64).reshape(len(column), -1)
    return np.asarray(column.to_numpy(zero_copy_only=False), np.float64).reshape(len(column), -1)


def _episodes(root: Path, info: dict, where: str) -> list[dict]:
    version = str(info.get('codebase_version', ''))
    if version.startswith('v2'):
        path = root / 'meta' / 'episodes.jsonl'
        if not path.is_file():
            raise DataError(f'{where}: {version} dataset without meta/episodes.jsonl')
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    elif version.startswith('v3'):
        files = sorted((root / 'meta' / 'episodes').glob('chunk-*/file-*.parquet'))
        if not files:
            raise DataError(f'{where}: no meta/episodes/chunk-*/file-*.parquet')
        table = _read_table(files)
        table = table.select([c for c in table.column_names if not c.startswith('stats/')])
        rows = table.to_pylist()
    else:
        raise DataError(f'{where}: unsupported LeRobot codebase_version {version!r}; '
                        'supported: v3.0, v2.1')
    if not rows:
        raise DataError(f'{where}: empty dataset: no episodes in the metadata')
    return sorted(rows, key=lambda r: r['episode_index'])


def _data_files(root: Path, info: dict, episodes: list[dict]) -> list[Path]:
    template = info.get('data_path', 'data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet')
    chunks = info.get('chunks_size', 1000)
    paths = []
    for ep in episodes:
        e = ep['episode_index']
        p = root / template.format(chunk_index=ep.get('data/chunk_index', 0),
                                   file_index=ep.get('data/file_index', 0),
                                   episode_chunk=e // chunks, episode_index=e)
        if p not in paths:
            paths.append(p)
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DataError(f'{root}: data file(s) missing: {", ".join(missing)}')
    return paths


def _video_path(root: Path, info: dict, key: str, ep: dict) -> Path:
    template = info.get('video_path') or ''
    e, chunks = ep['episode_index'], info.get('chunks_size', 1000)
    return root / template.format(video_key=key,
                                  chunk_index=ep.get(f'videos/{key}/chunk_index', 0),
                                  file_index=ep.get(f'videos/{key}/file_index', 0),
                                  episode_chunk=e // chunks, episode_index=e)


def decode_video(path: Path, resize: Resizer, spool: FrameSpool, progress: bool) -> np.ndarray:
    """Decode every frame of one video into `spool`; returns their timestamps (s, file time)."""
    import av

    if not path.is_file():
        raise DataError(f'{path}: video file missing')
    try:
        container = av.open(str(path))
    except av.FFmpegError as err:
        raise DataError(f'{path}: cannot open video: {err}') from err
    with container:
        if not container.streams.video:
            raise DataError(f'{path}: no video stream')
        stream = container.streams.video[0]
        codec = stream.codec_context.name
        if codec not in SUPPORTED_CODECS and stream.codec_context.codec.canonical_name \
                not in SUPPORTED_CODECS:
            raise DataError(f'{path}: unsupported video codec {codec!r}; supported: '
                            f'{", ".join(SUPPORTED_CODECS)}')
        stamps = []
        bar = tqdm(total=stream.frames or None, desc=f'decode {path.parent.parent.name}/'
                   f'{path.name}', unit='frame', disable=not progress, leave=False)
        try:
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                stamps.append(float(frame.pts * stream.time_base))
                spool.append(resize(frame.to_ndarray(format='rgb24')))
                bar.update()
        except av.FFmpegError as err:
            raise DataError(f'{path}: cannot decode {codec} video: {err}') from err
        finally:
            bar.close()
    return np.array(stamps)


def read_lerobot(root, config: DataConfig, workdir: Path, *,
                 progress: bool = True) -> LeRobotRead:
    """Every episode of a LeRobot dataset as RawRecordings (frames spooled under workdir)."""
    root = Path(root)
    where = str(root)
    info = json.loads((root / 'meta' / 'info.json').read_text())
    fps = float(info.get('fps', 0))
    if fps <= 0:
        raise DataError(f'{where}: meta/info.json has no positive fps')
    camera_keys, cameras = _select_cameras(info, config, where)
    state_names, action_names = _names(info, STATE, where), _names(info, ACTION, where)
    joint_cols = _columns(state_names, config.joint_names, STATE, where)
    action_cols = _columns(action_names, config.action_names, ACTION, where)
    episodes = _episodes(root, info, where)
    image_keys = [k for k in camera_keys if info['features'][k]['dtype'] == 'image']
    table = _read_table(_data_files(root, info, episodes),
                        ['episode_index', 'frame_index', 'timestamp', STATE, ACTION, *image_keys])
    ep_col = table.column('episode_index').to_numpy()
    frame_col = table.column('frame_index').to_numpy()
    # lerobot stamps frames at frame_index / fps (float32 in the file): use the exact grid
    grid = frame_col / fps
    ts_col = table.column('timestamp').to_numpy().astype(np.float64)
    ts_col = np.where(np.abs(ts_col - grid) < 1e-4, grid, ts_col)
    states, actions = _matrix(table.column(STATE)), _matrix(table.column(ACTION))

    frames = _Frames(root, info, table, config, workdir, cameras, camera_keys, progress)
    recordings = []
    try:
        for ep in tqdm(episodes, desc='episodes', unit='ep', disable=not progress, leave=False):
            e = ep['episode_index']
            sel = np.flatnonzero(ep_col == e)
            rows = sel[np.argsort(frame_col[sel], kind='stable')]
            if len(rows) == 0:
                continue
            t = ts_col[rows]
            recordings.append(RawRecording(
                name=f'episode_{e:06d}', camera_stamps=[t] * len(cameras),
                camera_frames=[frames.episode(c, key, ep, rows, t)
                               for c, key in enumerate(camera_keys)],
                joint_stamps=t, joint_values=states[rows][:, joint_cols],
                commands=SampledCommands(t, actions[rows][:, action_cols]),
                joint_names=tuple(state_names[i] for i in joint_cols),
                action_names=tuple(action_names[i] for i in action_cols), commands_from=ACTION,
                image_sizes=dict(frames.sizes)))
    finally:
        frames.close()
    if not recordings:
        raise DataError(f'{where}: empty dataset: no frames')
    version = info.get('codebase_version')
    return LeRobotRead(recordings=recordings, cameras=tuple(cameras),
                       action_period_s=config.action_period_s or 1.0 / fps,
                       source=f'{root} (LeRobot {version}, {len(recordings)} episodes, '
                              f'{fps:g} fps)')


def _select_cameras(info: dict, config: DataConfig, where: str) -> tuple[list, tuple]:
    """Camera feature keys and their names: all video/image features, or those configured."""
    camera_keys = [k for k, f in info.get('features', {}).items()
                   if f.get('dtype') in ('video', 'image')]
    if tuple(config.image_topics) != DEFAULT_IMAGE_TOPICS:
        unknown = [k for k in config.image_topics if k not in camera_keys]
        if unknown:
            raise DataError(f'{where}: camera feature(s) {", ".join(unknown)} not in the '
                            f'dataset; its camera features: {", ".join(camera_keys) or "none"}')
        return list(config.image_topics), tuple(config.camera_names)
    if not camera_keys:
        raise DataError(f'{where}: no camera (video or image) feature in meta/info.json')
    return camera_keys, camera_names_from_topics(tuple(camera_keys))


def _recorded_size(feature: dict, config: DataConfig) -> tuple[int, int]:
    """(height, width) of a camera feature, from its shape (named axes, else [h, w, c] or
    [c, h, w]); a square of image_short_side when the dataset does not say."""
    shape, names = list(feature.get('shape') or []), list(feature.get('names') or [])
    if len(shape) != 3:
        return config.image_short_side, config.image_short_side
    if 'height' in names and 'width' in names:
        return int(shape[names.index('height')]), int(shape[names.index('width')])
    if shape[0] in (1, 3) and shape[2] not in (1, 3):
        return int(shape[1]), int(shape[2])
    return int(shape[0]), int(shape[1])


class _Frames:
    """Decodes each camera's frames once into a spool and hands out per-episode row tables."""

    def __init__(self, root: Path, info: dict, table, config: DataConfig, workdir: Path,
                 cameras: tuple, camera_keys: list, progress: bool):
        self.root, self.info, self.table, self.progress = root, info, table, progress
        self.fps = float(info['fps'])
        self.sizes = {c: config.size_for(c, _recorded_size(info['features'][k], config))
                      for c, k in zip(cameras, camera_keys, strict=True)}
        self.resizers = [Resizer(self.sizes[c]) for c in cameras]
        self.spools = [FrameSpool(Path(workdir) / f'lerobot.{c}.frames', self.sizes[c])
                       for c in cameras]
        self.videos: list[dict] = [{} for _ in cameras]   # path -> (stamps, first spool row)
        self.handed_out: list[_Rows] = []

    def episode(self, c: int, key: str, ep: dict, rows: np.ndarray, t: np.ndarray) -> '_Rows':
        if self.info['features'][key]['dtype'] == 'image':
            out = _Rows(None, self._images(c, key, rows))
        else:
            out = _Rows(None, self._video_rows(c, key, ep, t))
        out.camera = c
        self.handed_out.append(out)
        return out

    def _images(self, c: int, key: str, rows: np.ndarray) -> np.ndarray:
        from PIL import Image

        start = self.spools[c].count
        for cell in self.table.column(key).take(rows).to_pylist():
            data = cell['bytes'] if isinstance(cell, dict) else cell
            with Image.open(io.BytesIO(data)) as img:
                self.spools[c].append(self.resizers[c](np.asarray(img.convert('RGB'))))
        return np.arange(start, start + len(rows))

    def _video_rows(self, c: int, key: str, ep: dict, t: np.ndarray) -> np.ndarray:
        path = _video_path(self.root, self.info, key, ep)
        if path not in self.videos[c]:
            first = self.spools[c].count
            stamps = decode_video(path, self.resizers[c], self.spools[c], self.progress)
            if len(stamps) == 0:
                raise DataError(f'{path}: no frame could be decoded')
            self.videos[c][path] = (stamps, first)
        stamps, first = self.videos[c][path]
        query = float(ep.get(f'videos/{key}/from_timestamp', 0.0)) + t
        nearest = _nearest(stamps, query)
        off = np.abs(stamps[nearest] - query)
        if np.any(off > 0.5 / self.fps):
            raise DataError(f'{path}: episode {ep["episode_index"]} frame at '
                            f'{query[np.argmax(off)]:.3f} s has no video frame within half a '
                            'frame period (from/to timestamps do not match the video)')
        return first + nearest

    def close(self) -> None:
        """Map the spools and point every handed-out row table at its camera's frames."""
        arrays = [s.array() for s in self.spools]
        for rows in self.handed_out:
            rows.frames = arrays[rows.camera]


def _nearest(stamps: np.ndarray, query: np.ndarray) -> np.ndarray:
    if len(stamps) == 0:
        return np.zeros(len(query), np.int64)
    hi = np.clip(np.searchsorted(stamps, query), 0, len(stamps) - 1)
    lo = np.clip(hi - 1, 0, len(stamps) - 1)
    return np.where(np.abs(stamps[lo] - query) <= np.abs(stamps[hi] - query), lo, hi)
