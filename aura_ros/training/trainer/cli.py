"""`python -m aura_ros train`: the command line around the pipeline (flags: aura_ros/cli.py)."""

import argparse
import shlex
import sys
from pathlib import Path

from aura_ros.memory.training import TrainingError
from aura_ros.training import distributed

from .checkpoints import CHECKPOINTS
from .config import TrainerConfig, TrainerError, quick_config, with_topics
from .pipeline import run


def main(args: argparse.Namespace) -> int:
    """`python -m aura_ros train --data PATH --out DIR` (arguments: aura_ros/cli.py); under
    `torchrun` data-parallel (aura_ros.training.distributed)."""
    with distributed.session():
        return _main(args)


def _main(args: argparse.Namespace) -> int:
    from aura_ros.data import DataError

    missing = [f'--{k}' for k in ('data', 'out') if not getattr(args, k, None)]
    if missing:
        print(f'error: python -m aura_ros train needs {" and ".join(missing)}', file=sys.stderr)
        return 2
    try:
        cfg = TrainerConfig.load(args.config) if args.config else TrainerConfig()
        if args.quick:
            cfg = quick_config(cfg)
        out = Path(args.out)
        if out.exists() and any(out.iterdir()) and not args.resume and not args.force:
            print(f'error: {out} exists and is not empty (--resume to continue a run there, '
                  '--force to train into it anew)', file=sys.stderr)
            return 2
        cfg = with_topics(cfg, args)
        dcfg = cfg.data
        from aura_ros.data import load_demonstrations

        # under torchrun rank 0 builds the decode cache; the others map it after a barrier
        demos = distributed.main_first(lambda: load_demonstrations(args.data, dcfg))
        command = 'python -m aura_ros ' + ' '.join(shlex.quote(a) for a in sys.argv[1:]) \
            if sys.argv[1:2] == ['train'] else f'python -m aura_ros train --data {args.data} ' \
            f'--out {args.out}' + (' --quick' if args.quick else '')
        if distributed.active():
            command = command.replace('python -m', f'torchrun ({distributed.world()} ranks) -m', 1)
        run(demos, cfg, out, command, resume=args.resume)
    except (TrainerError, TrainingError, DataError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('\ninterrupted; continue with the same command and --resume (checkpoints in '
              f'{Path(args.out) / CHECKPOINTS})', file=sys.stderr)
        return 130
    return 0
