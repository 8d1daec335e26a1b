"""Write a folder of synthetic cue-then-reach bags (aura_ros.data.synthetic), the cues in turn.

    python bench/write_synthetic_bags.py --out BAGS [--episodes 150] [--seconds 3.0]

The trainer's own test data, made bigger: a memory test where the cue (0.2-0.5 s) is gone when
the reach starts (1.0 s). Score a model trained on them with
`bench/so101_heldout.py --synthetic` (cue frames and "after GO" from the known timing).
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aura_ros.data.synthetic import CUE_COLOURS, write_bags  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', required=True, type=Path)
    ap.add_argument('--episodes', type=int, default=150)
    ap.add_argument('--seconds', type=float, default=3.0)
    args = ap.parse_args()
    cues = [i % len(CUE_COLOURS) for i in range(args.episodes)]
    write_bags(args.out, cues=cues, storage='mcap', seconds=args.seconds)
    print(f'{args.episodes} bags -> {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
