"""Decode cost per compressed camera frame (aura_ros.runtime.decode, Pillow), plus preprocessing.

    python bench/decode_cost.py [--repeats 200] [--out docs/results/decode_cost]

Frames: a 640x480 and a 1280x720 synthetic scene (smooth gradients, shapes, sensor noise: JPEG
cost depends on content, and pure noise would overstate it), encoded as image_transport's
compressed plugin does by default (JPEG quality 95, PNG level 3) and at JPEG quality 80. For each:
full-size decode, JPEG decode with `min_size` = the model's 96x96 (DCT-domain downscale), and
the decode + preprocess to the model's [1, 3, 96, 96] input. One thread, median and p99 in ms.
A benchmark, not a test: numbers depend on the machine and its load, which the file records.
"""

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, features

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aura_ros import provenance
from aura_ros.runtime.decode import decode  # noqa: E402
from aura_ros.runtime.model_dir import ImageSpec  # noqa: E402
from aura_ros.runtime.preprocess import Preprocessor  # noqa: E402

MODEL = ImageSpec(width=96, height=96)
SMALL = (MODEL.width, MODEL.height)


def scene(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A camera-like rgb8 frame: lit gradient background, a few solid shapes, mild noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([80 + 100 * x / width, 90 + 80 * y / height,
                      120 + 40 * np.sin(x / 40.0) * np.cos(y / 50.0)], axis=-1)
    for _ in range(12):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.03, 0.12) * width
        image[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.uniform(0, 255, 3)
    image += rng.normal(0, 3, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def encode(pixels: np.ndarray, kind: str, quality: int = 95) -> bytes:
    out = io.BytesIO()
    if kind == 'jpeg':
        Image.fromarray(pixels).save(out, 'JPEG', quality=quality)
    else:
        Image.fromarray(pixels).save(out, 'PNG', compress_level=3)
    return out.getvalue()


def timed(fn, repeats: int) -> dict:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    ms = np.asarray(times) * 1e3
    return {'p50_ms': float(np.median(ms)), 'p99_ms': float(np.percentile(ms, 99))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeats', type=int, default=200)
    parser.add_argument('--out', default=None, help='write <out>.json and <out>.md')
    args = parser.parse_args()
    prep = Preprocessor(MODEL)
    rows = []
    for width, height in ((640, 480), (1280, 720)):
        pixels = scene(width, height)
        rows.append({'frame': f'{width}x{height}', 'format': 'raw rgb8',
                     'bytes': pixels.nbytes, 'decode': None, 'decode_min_size': None,
                     'decode_preprocess': timed(lambda p=pixels: prep(p, 'rgb8'), args.repeats)})
        for kind, quality in (('jpeg', 95), ('jpeg', 80), ('png', None)):
            data = encode(pixels, kind, quality or 0)

            def full(d=data):
                return decode(d)

            def reduced(d=data):
                return decode(d, min_size=SMALL)

            def both(d=data):
                return prep(*decode(d, min_size=SMALL))

            rows.append({
                'frame': f'{width}x{height}',
                'format': f'{kind} q{quality}' if quality else f'{kind} level 3',
                'bytes': len(data), 'decode': timed(full, args.repeats),
                'decode_min_size': timed(reduced, args.repeats) if kind == 'jpeg' else None,
                'decode_preprocess': timed(both, args.repeats)})

    def cell(t):
        return '-' if t is None else f'{t["p50_ms"]:.2f} / {t["p99_ms"]:.2f}'

    lines = ['| frame | format | bytes | decode full | decode, min_size 96x96 | decode + '
             'preprocess to 96x96 |', '|---|---|---|---|---|---|']
    for r in rows:
        lines.append(f'| {r["frame"]} | {r["format"]} | {r["bytes"]} | {cell(r["decode"])} | '
                     f'{cell(r["decode_min_size"])} | {cell(r["decode_preprocess"])} |')
    text = '\n'.join(lines)
    print(text)
    meta = {**provenance.header(provenance.command('python bench/decode_cost.py'),
                                'shared with other jobs'),
            'pillow': Image.__version__, 'libjpeg_turbo': features.version('jpg'),
            'unit': 'milliseconds per frame, p50 / p99, one thread'}
    if args.out:
        out = Path(args.out)
        out.with_suffix('.json').write_text(json.dumps({**meta, 'rows': rows}, indent=2) + '\n')
        out.with_suffix('.md').write_text(
            f'# Decode cost per compressed frame\n\nCommand: `{meta["command"]}`  \n'
            f'Machine: {meta["machine"]}; Pillow {meta["pillow"]} (libjpeg-turbo '
            f'{meta["libjpeg_turbo"]}). Milliseconds per frame, p50 / p99, one thread.\n\n'
            f'{text}\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
