"""Packaging: pip installs what colcon installs, package.xml is sound, CI runs the README."""

import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROS_DEPS = {'rclpy', 'sensor_msgs', 'std_msgs', 'std_srvs', 'trajectory_msgs', 'diagnostic_msgs'}
NOT_SOURCES = shutil.ignore_patterns(
    '.git', '.venv', 'build', 'install', 'log', 'dist', '*.egg-info', '__pycache__', '.*_cache'
)


@pytest.fixture(scope='module')
def prefix(tmp_path_factory):
    """`pip install --prefix` of a copy of the source tree (the tree itself stays clean)."""
    tmp = tmp_path_factory.mktemp('install')
    source = tmp / 'src'
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES)
    # --ignore-installed: otherwise pip first uninstalls the venv's own (editable) aura_ros.
    subprocess.run(
        [sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--no-build-isolation',
         '--ignore-installed', '--prefix', str(tmp / 'prefix'), str(source)],
        check=True,
    )
    return tmp / 'prefix'


@pytest.fixture(scope='module')
def colcon_prefix(tmp_path_factory):
    """What colcon's ament_python build runs: `setup.py ... install` of a copy of the tree into
    a prefix, the console scripts in <prefix>/lib/aura_ros (`ros2 run` looks there)."""
    tmp = tmp_path_factory.mktemp('colcon')
    source, build = tmp / 'src', tmp / 'build'
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES)
    build.mkdir()
    subprocess.run([sys.executable, 'setup.py', '-q', 'egg_info', '--egg-base', str(build),
                    'build', '--build-base', str(build), 'install', '--prefix',
                    str(tmp / 'prefix'), '--record', str(build / 'install.log'),
                    '--single-version-externally-managed'],
                   cwd=source, check=True, capture_output=True)
    return tmp / 'prefix'


HEAVY = ('importlib.metadata', 'numpy', 'torch', 'rclpy', 'mujoco')


def imports_in_order(stderr: str) -> list:
    """The modules `python -X importtime` reports, in the order their imports finished."""
    return [line.rsplit('|', 1)[1].strip() for line in stderr.splitlines()
            if line.startswith('import time:') and '|' in line][1:]


@pytest.mark.parametrize('script,args', [('aura_node', ['-p', 'device:=nonsense']),
                                         ('aura_so101_sim', ['-p', 'frame_hz:=0.0'])])
def test_colcon_console_scripts_install_the_signal_handler_before_any_heavy_import(
        colcon_prefix, script, args):
    """setuptools' own wrapper scans every installed distribution (importlib.metadata) before
    it imports the entry point: Ctrl-C in that window (long on a ROS install) ended aura_node
    with a traceback. The wrapper setup.py writes imports the entry module first, and that
    installs the handler before numpy, torch, rclpy or MuJoCo."""
    wrapper = colcon_prefix / 'lib' / 'aura_ros' / script
    assert 'importlib.metadata' not in wrapper.read_text() and \
        'from aura_ros.ros.console import' in wrapper.read_text()
    (site_packages,) = colcon_prefix.glob('lib/python3*/site-packages')
    proc = subprocess.run([sys.executable, '-X', 'importtime', str(wrapper), '--ros-args',
                           *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, 'PYTHONPATH': str(site_packages)})
    assert proc.returncode == 2, proc.stdout + proc.stderr[-3000:]   # the bad parameter
    modules = imports_in_order(proc.stderr)
    handler = modules.index('aura_ros.ros.interrupt')
    assert not [m for m in modules[:handler] if m.split('.')[0] in HEAVY or m in HEAVY], \
        modules[:handler]


def test_install_has_the_ament_files(prefix):
    index = prefix / 'share/ament_index/resource_index/packages'
    assert [p.name for p in index.iterdir()] == ['aura_ros']
    assert (prefix / 'share/aura_ros/package.xml').read_bytes() == (
        ROOT / 'package.xml'
    ).read_bytes()


@pytest.mark.parametrize('pattern', ['launch/*.py', 'config/*.yaml', 'config/*.json',
                                     'models/**/*'])
def test_install_has_launch_config_and_models(prefix, pattern):
    for source in ROOT.glob(pattern):
        if source.is_file():
            assert (prefix / 'share/aura_ros' / source.relative_to(ROOT)).is_file(), source


def test_install_has_the_package_and_console_scripts(prefix):
    (site_packages,) = prefix.glob('lib/python3*/site-packages')
    assert (site_packages / 'aura_ros/__init__.py').is_file()
    assert (site_packages / 'aura_ros/ros/__init__.py').is_file()
    assert not (site_packages / 'test').exists()
    # pip generates the console scripts in <prefix>/bin from entry_points and ignores
    # setup.cfg's install_scripts (lib/aura_ros), which is for colcon and `ros2 run`.
    for script in ('aura_node', 'aura_so101_sim'):
        assert (prefix / 'bin' / script).is_file(), script
    assert not (prefix / 'bin' / 'aura_sim').exists()     # the retired planar simulator
    assert not (prefix / 'lib/aura_ros').exists()


def test_package_xml_is_an_ament_python_package():
    root = ET.parse(ROOT / 'package.xml').getroot()
    assert root.get('format') == '3'
    assert root.findtext('name') == 'aura_ros'
    assert root.findtext('version') == '0.1.0'
    assert root.findtext('license') == 'Apache-2.0'
    assert root.findtext('export/build_type') == 'ament_python'
    exec_depends = {e.text for e in root.findall('exec_depend')}
    assert ROS_DEPS <= exec_depends
    assert {'python3-numpy', 'python3-yaml'} <= exec_depends
    assert 'python3-pytest' in {e.text for e in root.findall('test_depend')}


def readme_commands():
    """The two commands of the README's 'Two commands' section: set-up + demo, then tests."""
    readme = (ROOT / 'README.md').read_text()
    section = readme.split('\n## Two commands\n', 1)[1]
    block = re.search(r'```(?:sh|bash)\n(.*?)```', section, re.S).group(1)
    return [line.split('#')[0].strip() for line in block.splitlines() if line.strip()]


def test_ci_runs_the_readme_test_command():
    demo, test = readme_commands()
    assert (demo, test) == ('make demo', 'make test')
    makefile = (ROOT / 'Makefile').read_text()
    assert '\ndemo: venv\n' in makefile and '\ntest: venv\n' in makefile
    command = test
    ci = (ROOT / '.ci' / 'run').read_text().splitlines()
    assert command in [line.strip() for line in ci]
    assert (ROOT / '.ci' / 'run').stat().st_mode & 0o111, '.ci/run must be executable'


@pytest.mark.parametrize('installer', ['pip', 'colcon'])
@pytest.mark.parametrize('script', ['aura_node', 'aura_so101_sim'])
@pytest.mark.parametrize('after_s', [0.0, 0.2])
def test_ctrl_c_right_after_a_console_script_starts_exits_0_quietly(colcon_prefix, installer,
                                                                    script, after_s):
    """Ctrl-C as soon as the entry module runs (while torch, rclpy or MuJoCo still load): exit
    0, no traceback, for the script pip writes (.venv/bin) and the one colcon's install does."""
    pytest.importorskip('rclpy', reason='rclpy not installed')
    from conftest import interrupt_process

    env = {}
    if installer == 'pip':
        wrapper = Path(sys.executable).parent / script
        if not wrapper.is_file():
            pytest.skip(f'{wrapper} is not installed (make venv)')
    else:
        wrapper = colcon_prefix / 'lib' / 'aura_ros' / script
        (site_packages,) = colcon_prefix.glob('lib/python3*/site-packages')
        env['PYTHONPATH'] = str(site_packages)
    code, output = interrupt_process([str(wrapper), '--ros-args', '-p', 'device:=cpu']
                                     if script == 'aura_node' else [str(wrapper)],
                                     after_s=after_s, env=env)
    assert code == 0 and 'Traceback' not in output, output
