"""Import layering (docs/design.md section 2): ros -> runtime -> memory; training -> tasks, memory.

Training may also import runtime: it writes the runtime's model directory (ONNX backbone export)
and uses its train/serve conventions (delta targets, image normalisation); nothing in runtime or
memory imports training. The trainer package's stages import downwards only: the pipeline strings
them together, and code outside the package imports its front door, not its modules.

Only aura_ros.ros may import rclpy or ROS message packages, so everything else installs and
tests without ROS.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / 'aura_ros'
ROS_MODULES = {
    'rclpy', 'rosidl_runtime_py', 'builtin_interfaces', 'sensor_msgs', 'std_msgs', 'std_srvs',
    'trajectory_msgs', 'diagnostic_msgs', 'launch', 'launch_ros',
}
# aura_ros sub-package -> sibling sub-packages it must not import.
FORBIDDEN = {
    'memory': {'tasks', 'training', 'runtime', 'ros'},
    'tasks': {'training', 'runtime', 'ros'},
    'training': {'ros'},
    'runtime': {'tasks', 'training', 'ros'},
}


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


@pytest.mark.parametrize('path', sources(), ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_layering(path):
    parts = path.relative_to(PACKAGE).parts
    layer = parts[0] if len(parts) > 1 else None
    for module in imported_modules(path):
        top, _, rest = module.partition('.')
        if layer != 'ros':
            assert top not in ROS_MODULES, f'{path}: only aura_ros.ros may import {module}'
        if top == 'aura_ros' and layer in FORBIDDEN:
            sibling = rest.partition('.')[0]
            assert sibling not in FORBIDDEN[layer], f'{path}: {layer} must not import {module}'


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
