"""Packaging: pip installs what colcon installs, package.xml is sound, CI runs the README."""

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
