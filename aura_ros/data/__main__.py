"""Check a recording before training: `python -m aura_ros.data PATH [--config data.yaml]`.

Loads the source exactly as training will (building the cache on the first run) and prints what
came out: cameras, joint and action names, period, episodes, frames kept and dropped by reason.
Exit code 1 with the DataError's message when the source cannot give demonstrations.
"""

import argparse
import sys
from pathlib import Path

import yaml

from .config import DataConfig
from .demonstrations import DataError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='python -m aura_ros.data', description=__doc__)
    parser.add_argument('path', help='bag directory, .mcap/.db3 file, folder of bags, or a '
                                     'LeRobot dataset root')
    parser.add_argument('--config', help='YAML mapping of DataConfig fields')
    parser.add_argument('--rebuild', action='store_true', help='ignore an existing cache entry')
    args = parser.parse_args(argv)
    try:
        data = yaml.safe_load(Path(args.config).read_text()) if args.config else None
        config = DataConfig.from_dict(data, where=args.config or 'config')
        from .load import load_demonstrations

        demos = load_demonstrations(args.path, config, rebuild=args.rebuild)
    except (DataError, OSError, yaml.YAMLError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    print(f'source:        {demos.source}')
    print('cameras:       ' + ', '.join(f'{c} ({demos.size_of(c)[0]}x{demos.size_of(c)[1]})'
                                          for c in demos.cameras))
    print(f'joints:        {", ".join(demos.joint_names)}')
    print(f'actions:       {", ".join(demos.action_names)}')
    print(f'period, chunk: {demos.action_period_s:.6f} s, {demos.chunk}')
    print(f'episodes:      {len(demos.episodes)} ({demos.frames} frames; '
          f'{", ".join(f"{ep.name}: {len(ep)}" for ep in demos.episodes[:8])}'
          f'{", ..." if len(demos.episodes) > 8 else ""})')
    for key, value in demos.report.items():
        print(f'  {key}: {value}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
