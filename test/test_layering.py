"""Import layering (README "Layout and layering", docs/design.md section 2).

Floors, from the ground up: tasks, memory -> runtime; above the runtime two towers that never
meet: data -> training (learning) and ros, the product node (serving); above the node its rig
wings ros/so101, ros/pusher (its world served by ros/so101's simulator and recorder), ros/bench;
then aura_ros/bench -> cli. A module imports only its own floor and the floors below it;
nothing imports back up or across. Training imports runtime: it writes the
runtime's model directory and uses its train/serve conventions (delta targets, image
normalisation). The trainer package's stages import downwards only: the pipeline strings them
together, and code outside the package imports its front door, not its modules. The
ground-floor helpers (progress, provenance, checks) import nothing of aura_ros.

Only aura_ros.ros may import rclpy or ROS message packages, so everything else installs and
tests without ROS. No module holds more than LOGIC_LIMIT lines of logic: a longer one does more
than one job (the node's were split out of it this way).
"""

import ast
import io
import tokenize
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / 'aura_ros'
ROS_MODULES = {
    'rclpy', 'rosidl_runtime_py', 'builtin_interfaces', 'sensor_msgs', 'std_msgs', 'std_srvs',
    'trajectory_msgs', 'diagnostic_msgs', 'launch', 'launch_ros',
}
GROUND = {'progress', 'provenance', 'checks', 'urdf'}
# aura_ros sub-package (or ground-floor module) -> what it must not import.
FORBIDDEN = {
    'memory': {'tasks', 'training', 'runtime', 'data', 'ros', 'bench', 'cli'},
    'tasks': {'memory', 'training', 'runtime', 'data', 'ros', 'bench', 'cli'},
    'runtime': {'tasks', 'training', 'data', 'ros', 'bench', 'cli'},
    'data': {'tasks', 'training', 'ros', 'bench', 'cli'},
    'training': {'ros', 'bench', 'cli'},
    'ros': {'data', 'training', 'bench', 'cli'},
    'bench': {'cli'},
    **{module: {'memory', 'tasks', 'runtime', 'data', 'training', 'ros', 'bench', 'cli'}
       for module in GROUND},
}
# The rig wings of aura_ros/ros: the product modules (ros/*.py) never import them. The console
# scripts' entry module (the simulator's script included) stands above both.
WINGS = {'so101', 'pusher', 'bench'}
ENTRY = {'ros/console.py'}
# Back-up imports left for another change: (file, imported sibling); none today.
LEFT: set = set()


def imported_modules(path):
    """Absolute names of the modules a file imports (relative imports resolved)."""
    package = ['aura_ros', *path.relative_to(PACKAGE).parts[:-1]] if PACKAGE in path.parents \
        else []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            yield '.'.join([*base, *([node.module] if node.module else [])])


def sources():
    return sorted(p for p in PACKAGE.rglob('*.py') if '__pycache__' not in p.parts)


def layer_of(path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else path.stem


@pytest.mark.parametrize('path', sources(), ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_layering(path):
    parts = path.relative_to(PACKAGE).parts
    layer = layer_of(path)
    in_product = layer == 'ros' and len(parts) == 2 and '/'.join(parts) not in ENTRY
    for module in imported_modules(path):
        top, _, rest = module.partition('.')
        if layer != 'ros':
            assert top not in ROS_MODULES, f'{path}: only aura_ros.ros may import {module}'
        if top != 'aura_ros':
            continue
        sibling, _, inner = rest.partition('.')
        if layer in FORBIDDEN and ('/'.join(parts), sibling) not in LEFT:
            assert sibling not in FORBIDDEN[layer], f'{path}: {layer} must not import {module}'
        if in_product and sibling == 'ros':
            assert inner.partition('.')[0] not in WINGS, \
                f'{path}: the product node must not import the rig wing {module}'


def test_the_rules_see_what_they_guard():
    """The rules would pass vacuously if the layout they name moved: every layer and wing
    exists, and each left exception still names an import that is there."""
    for layer in FORBIDDEN:
        assert (PACKAGE / layer).is_dir() or (PACKAGE / f'{layer}.py').is_file(), layer
    for wing in WINGS:
        assert (PACKAGE / 'ros' / wing / '__init__.py').is_file(), wing
    for file, sibling in LEFT:
        path = PACKAGE / file
        if path.is_file():
            assert any(m.startswith(f'aura_ros.{sibling}') for m in imported_modules(path)), \
                f'{file} no longer imports aura_ros.{sibling}: drop it from LEFT'


TRAINER = PACKAGE / 'training' / 'trainer'
# trainer module -> the only trainer modules that may import it (the rest are stages and config,
# which the pipeline reads)
TRAINER_UPPER = {'pipeline': {'cli', '__init__'}, 'cli': {'__init__'}}


@pytest.mark.parametrize('path', sorted(TRAINER.glob('*.py')), ids=lambda p: p.name)
def test_the_trainers_stages_import_downwards(path):
    for module in imported_modules(path):
        parts = module.split('.')
        if parts[:3] == ['aura_ros', 'training', 'trainer'] and len(parts) > 3:
            allowed = TRAINER_UPPER.get(parts[3])
            assert allowed is None or path.stem in allowed, \
                f'{path.name} must not import {module}: only {", ".join(sorted(allowed))} may'


def outside_trainer():
    bench = PACKAGE.parent / 'bench'
    return [p for p in (*sources(), *sorted(bench.glob('*.py'))) if TRAINER not in p.parents]


@pytest.mark.parametrize('path', outside_trainer(),
                         ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_the_trainer_is_used_through_its_front_door(path):
    for module in imported_modules(path):
        assert not module.startswith('aura_ros.training.trainer.'), \
            f'{path}: import {module.rsplit(".", 1)[0]} (the trainer package), not its modules'


LOGIC_LIMIT = 500
# Modules allowed past LOGIC_LIMIT, each with why: pure data tables only (their size is data,
# not logic). None today.
LONG_ALLOWED: dict[str, str] = {}
NOT_CODE = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
            tokenize.ENDMARKER, tokenize.ENCODING}


def logic_lines(source: str) -> int:
    """Lines that hold code: not blank, not only a comment, not part of a docstring."""
    docstrings = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                docstrings.update(range(first.lineno, first.end_lineno + 1))
    code = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in NOT_CODE:
            code.update(range(token.start[0], token.end[0] + 1))
    return len(code - docstrings)


def test_logic_lines_count_code_only():
    source = (
        '"""A module docstring\nover two lines."""\n\n# a comment\n'
        'def f(x):\n    """Its docstring."""\n    y = (x +\n         1)  # trailing\n'
        '    text = """a string\n    that is data"""\n    return y\n')
    assert logic_lines(source) == 6        # def, y = ( two lines ), text = ( two ), return


@pytest.mark.parametrize('path', sources(), ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_no_module_is_over_the_logic_limit(path):
    name = str(path.relative_to(PACKAGE))
    lines = logic_lines(path.read_text())
    if name in LONG_ALLOWED:
        assert lines > LOGIC_LIMIT, f'{name} has {lines} lines of logic now: drop it from ' \
            'LONG_ALLOWED'
        return
    assert lines <= LOGIC_LIMIT, (
        f'{name} has {lines} lines of logic (code lines, not blank, comment or docstring), '
        f'over {LOGIC_LIMIT}: split it into modules with one job each')
