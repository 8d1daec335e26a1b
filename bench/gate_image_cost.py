"""What does watching the gate picture cost aura_node's steps?

    python bench/gate_image_cost.py [--seconds 20] [--repeats 3] [--out PATH]

Starts aura_node (bundled model, default parameters: ~/gate_image drawn at 5 Hz, 300 steps,
4 thumbnails) as its own process, plays a 30 Hz rgb8 camera and joint states from this process
(aura_ros/ros/bench/latency.py's client), and measures each frame's step latency (image published
-> its gate received) in segments that alternate between nobody and one subscriber on
~/gate_image. Writes <out>.json and <out>.md. A benchmark, not a test: the numbers depend on the
machine and its load, which the file records. Also times one picture alone: GateView.render()
of a full window (300 steps, 4 thumbnails of 96x96 frames), what the timer pays per picture.
"""

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from aura_ros import provenance

REPO = Path(__file__).resolve().parents[1]


def render_ms(repeats: int = 200) -> dict:
    """p50/p99 of GateView.render() (ms) with a full default window and 4 thumbnails."""
    import time

    from aura_ros.runtime.gate_view import GateView

    rng = np.random.default_rng(0)
    view = GateView()
    frame = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    for step in range(1, 601):
        wrote = step % 50 == 0
        view.record(step, 0.9 if wrote else float(rng.uniform(0, 0.3)), 0.5,
                    float(rng.uniform(0, 5)), wrote, step // 50, (frame, 'rgb8'))
    view.render()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        view.render()
        times.append((time.perf_counter() - start) * 1e3)
    return {'p50_ms': float(np.percentile(times, 50)), 'p99_ms': float(np.percentile(times, 99)),
            'picture': f'{view.width}x{view.height} rgb8', 'repeats': repeats}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--seconds', type=float, default=20.0, help='per segment')
    parser.add_argument('--repeats', type=int, default=3, help='(off, on) pairs')
    parser.add_argument('--rate', type=float, default=30.0)
    parser.add_argument('--out', default=None)
    args = parser.parse_args()
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    os.environ.setdefault('ROS_DOMAIN_ID', '138')
    from aura_ros.ros.bench.latency import compare_gate_image

    load_before = os.getloadavg()[0]
    render = render_ms()
    rows = compare_gate_image(repeats=args.repeats, duration_s=args.seconds, rate_hz=args.rate)
    load_after = os.getloadavg()[0]
    summary = {}
    for watching in (False, True):
        mine = [r for r in rows if r['gate_image_subscriber'] == watching]
        summary['with' if watching else 'without'] = {
            'p50_ms_median': float(np.median([r['p50_ms'] for r in mine])),
            'p99_ms_median': float(np.median([r['p99_ms'] for r in mine])),
            'p99_ms_each': [r['p99_ms'] for r in mine],
            'dropped': sum(r['dropped'] for r in mine), 'frames': sum(r['frames'] for r in mine),
            'pictures_drawn': sum(r['pictures_drawn'] for r in mine)}
    result = {
        **provenance.header(provenance.command('python bench/gate_image_cost.py'),
                            f'no GPU, load average {load_before:.1f} before / {load_after:.1f} '
                            'after; shared with other jobs'),
        'rate_hz': args.rate, 'segment_s': args.seconds, 'render': render, 'summary': summary,
        'segments': rows}
    print(json.dumps(result, indent=2))
    if args.out:
        out = Path(args.out)
        out.with_suffix('.json').write_text(json.dumps(result, indent=2) + '\n')
        lines = [
            "# Cost of ~/gate_image to the node's steps", '',
            f'Command: `{result["command"]}`  ', f'Machine: {result["machine"]}.', '',
            'aura_node (bundled model, default parameters) as its own process; a 224x224 rgb8 '
            f'camera at {args.rate:g} Hz; step latency = image published -> its gate '
            'received. Segments of '
            f'{args.seconds:g} s alternate between no subscriber and one subscriber on '
            '~/gate_image (drawn at 5 Hz); the medians over the segments:', '',
            '| ~/gate_image subscriber | p50 ms | p99 ms | p99 of each segment, ms | dropped / '
            'frames | pictures drawn |', '|---|---|---|---|---|---|']
        for key in ('without', 'with'):
            s = summary[key]
            lines.append(f'| {key} | {s["p50_ms_median"]:.1f} | {s["p99_ms_median"]:.1f} | '
                         f'{", ".join(f"{v:.1f}" for v in s["p99_ms_each"])} | {s["dropped"]} / '
                         f'{s["frames"]} | {s["pictures_drawn"]} |')
        lines += ['', f'One picture alone (`GateView.render()`, {render["picture"]}, full '
                  f'window, 4 thumbnails, {render["repeats"]} times): p50 '
                  f'{render["p50_ms"]:.1f} ms, p99 {render["p99_ms"]:.1f} ms.',
                  '', 'The machine was shared with other jobs while this ran (the load average '
                  'above): the p99 of a segment moves with their load; compare the interleaved '
                  'segments, not single numbers.', '']
        out.with_suffix('.md').write_text('\n'.join(lines))
    return 0


if __name__ == '__main__':
    sys.exit(main())
