"""The command line: table-driven, nested commands, implementing modules imported lazily."""

import subprocess
import sys

import pytest

from aura_ros import __version__, cli

LAZY = 'aura_ros_test_never_imported'


def test_version_command(capsys):
    assert cli.main(['version']) == 0
    assert capsys.readouterr().out.strip() == f'aura_ros {__version__}'


def test_python_dash_m():
    out = subprocess.run(
        [sys.executable, '-m', 'aura_ros', 'version'], check=True, capture_output=True, text=True
    ).stdout
    assert out.strip() == f'aura_ros {__version__}'


def test_nested_command_gets_its_arguments():
    def add_arguments(parser):
        parser.add_argument('--steps', type=int, default=3)

    table = {
        'version': cli.COMMANDS['version'],
        'bench synthetic': cli.Command(f'{__name__}:_echo', 'echo', add_arguments),
        'bench perf': cli.Command(f'{LAZY}:main', 'never runs here'),
    }
    assert cli.main(['bench', 'synthetic', '--steps', '7'], table) == 7
    assert LAZY not in sys.modules  # building the parser imported none of the targets


def test_missing_command_is_an_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([])
    assert exit_info.value.code == 2


def _echo(args):
    return args.steps
