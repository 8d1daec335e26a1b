"""Entry point of `python -m aura_ros`."""

from aura_ros.cli import main

if __name__ == '__main__':
    raise SystemExit(main())
