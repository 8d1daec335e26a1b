"""Command line of aura_ros: `python -m aura_ros <command> [args]`.

Every command is one entry of COMMANDS: its name (words separated by spaces make nested
commands, e.g. 'bench synthetic'), the 'module:function' that runs it, a help line and, if it
takes arguments, a function that adds them to its argparse parser. The implementing module is
imported only when its command runs, so `--help` and unrelated commands never pay for torch,
onnxruntime or rclpy. The function gets the parsed argparse.Namespace and returns an exit code
(None means 0).

To add a command, add one entry, e.g.:

    'bench synthetic': Command('aura_ros.training.bench:synthetic_main',
                               'synthetic event-recall benchmark', _bench_synthetic_args),
"""

import argparse
import importlib
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple

from aura_ros import __version__

AddArguments = Callable[[argparse.ArgumentParser], None]


@dataclass(frozen=True)
class Command:
    """One command line command, resolved lazily."""

    target: str  # 'package.module:function', imported only when the command runs
    help: str
    add_arguments: Optional[AddArguments] = None


def print_version(args: argparse.Namespace) -> int:
    print(f'aura_ros {__version__}')
    return 0


COMMANDS: Dict[str, Command] = {
    'version': Command('aura_ros.cli:print_version', 'print the aura_ros version'),
}


def build_parser(commands: Dict[str, Command] = COMMANDS) -> argparse.ArgumentParser:
    """Build the parser for a command table (imports none of the command modules)."""
    parser = argparse.ArgumentParser(
        prog='python -m aura_ros', description='aura_ros: robot policy with AURA memory.'
    )
    parser.add_argument('--version', action='version', version=f'aura_ros {__version__}')
    groups: Dict[Tuple[str, ...], argparse._SubParsersAction] = {
        (): parser.add_subparsers(dest='command', metavar='command', required=True)
    }
    for name, command in commands.items():
        words = tuple(name.split())
        for depth in range(1, len(words)):  # the groups of a nested command, e.g. 'bench'
            group = words[:depth]
            if group not in groups:
                group_parser = groups[group[:-1]].add_parser(
                    group[-1], help=f'{" ".join(group)} commands'
                )
                groups[group] = group_parser.add_subparsers(
                    dest='_'.join(group) + '_command', metavar='command', required=True
                )
        sub = groups[words[:-1]].add_parser(words[-1], help=command.help, description=command.help)
        if command.add_arguments is not None:
            command.add_arguments(sub)
        sub.set_defaults(_target=command.target)
    return parser


def resolve(target: str) -> Callable[[argparse.Namespace], Optional[int]]:
    """Import 'package.module:function' and return the function."""
    module_name, _, function_name = target.partition(':')
    return getattr(importlib.import_module(module_name), function_name)


def main(
    argv: Optional[Sequence[str]] = None, commands: Dict[str, Command] = COMMANDS
) -> int:
    args = build_parser(commands).parse_args(argv)
    target = vars(args).pop('_target')
    return int(resolve(target)(args) or 0)
