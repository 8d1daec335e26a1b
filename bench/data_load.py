"""Load time of a recorded bag: first load (read + decode + resize + align + cache) vs cached.

    nice -n 10 python bench/data_load.py [--seconds 60] [--fps 30] [--storage mcap]
                                         [--out docs/results/data_load.json] [--keep DIR]

Writes a synthetic rosbag2 bag (aura_ros.data.synthetic.write_bag) of --seconds of 640x480 rgb8
frames at --fps, joint states at 100 Hz and leader-arm commands at 50 Hz, into a temporary
folder, then times load_demonstrations with the default DataConfig (96x96, chunk 8): --repeat
first loads (rebuild=True: each decodes every frame) and 5 cached loads (only map the cache);
medians are reported with every time. A benchmark, not a test: numbers
depend on the machine, its disk and its load.
"""

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aura_ros import provenance
from aura_ros.data import DataConfig  # noqa: E402
from aura_ros.data.images import Resizer  # noqa: E402
from aura_ros.data.load import load_demonstrations  # noqa: E402
from aura_ros.data.synthetic import write_bag  # noqa: E402


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob('*') if p.is_file())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seconds', type=float, default=60.0)
    parser.add_argument('--fps', type=float, default=30.0)
    parser.add_argument('--storage', default='mcap', choices=('mcap', 'sqlite3'))
    parser.add_argument('--out', default='docs/results/data_load.json')
    parser.add_argument('--keep', default=None, help='write the bag here and keep it')
    parser.add_argument('--repeat', type=int, default=3,
                        help='first loads to time (each rebuilds the cache); cached: 5')
    args = parser.parse_args(argv)

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix='aura_data_load_'))
    bag = work / 'bag'
    try:
        t = time.perf_counter()
        if not bag.exists():
            write_bag(bag, args.storage, seconds=args.seconds, fps=args.fps,
                      image_size=(480, 640), command='joint_state')
        write_s = time.perf_counter() - t
        config = DataConfig(cache_dir=str(work / 'cache'))
        shutil.rmtree(work / 'cache', ignore_errors=True)
        first_times, cached_times = [], []
        for _ in range(args.repeat):
            t = time.perf_counter()
            first = load_demonstrations(bag, config, progress=False, rebuild=True)
            first_times.append(time.perf_counter() - t)
        for _ in range(5):
            t = time.perf_counter()
            second = load_demonstrations(bag, config, progress=False)
            cached_times.append(time.perf_counter() - t)
        first_s, cached_s = float(np.median(first_times)), float(np.median(cached_times))
        t = time.perf_counter()
        touched = sum(int(ep.images['image'][::10].sum() % 7) for ep in second.episodes)
        read_all_s = time.perf_counter() - t
        resize = Resizer(config.image_size)
        frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), np.uint8)
        t = time.perf_counter()
        for _ in range(100):
            resize(frame, 'rgb8')
        resize_ms = (time.perf_counter() - t) * 10
        result = {
            **provenance.header(provenance.command('nice -n 10 python bench/data_load.py', argv),
                                'CPU VM shared with other jobs; disk is the VM disk',
                                detailed=True),
            'bag': {'storage': args.storage, 'seconds': args.seconds, 'fps': args.fps,
                    'frames': first.report['frames_read'], 'size': '640x480 rgb8',
                    'bytes': folder_bytes(bag), 'write_s': round(write_s, 2)},
            'config': {'image_size': list(config.image_size), 'chunk': config.chunk},
            'rows': first.frames,
            'first_load_s': round(first_s, 3),
            'first_load_s_each': [round(x, 3) for x in first_times],
            'cached_load_s_each': [round(x, 5) for x in cached_times],
            'statistic': 'median',
            'first_load_frames_per_s': round(first.report['frames_read'] / first_s, 1),
            'cached_load_s': round(cached_s, 4),
            'speedup': round(first_s / cached_s, 1),
            'cache_bytes': folder_bytes(work / 'cache'),
            'read_every_10th_cached_image_s': round(read_all_s, 4),
            'resize_640x480_ms_per_frame': round(resize_ms, 2),
            '_checksum': touched,
        }
        print(json.dumps(result, indent=2))
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(result, indent=2) + '\n')
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
