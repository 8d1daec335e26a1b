"""Train a model directory on your own demonstrations: `python -m aura_ros train --data PATH`.

    ros2 bag record ...                                  # teleoperate, record
    python -m aura_ros train --data demo.mcap --out models/mine [--config train.yaml]
    ros2 run aura_ros aura_node --ros-args -p model_dir:=models/mine

Seeded, CPU, `threads` per rank (1). The demonstrations (`aura_ros.data.load_demonstrations`:
rosbag2 or LeRobot, aligned on the camera clock) go through six stages (pipeline.py): split and
targets (episodes.py; targets absolute or, with `action_mode: delta`, the increments
`aura_ros.runtime.actions` integrates back), the frozen backbone (backbone.py: a small CNN per
camera trained as an autoencoder plus an action read-out, or the user's ONNX encoder,
`aura_ros.training.onnx_encoder`), every frame's features (features.py), AURA and the baselines
trained on them (`aura_ros.memory.training.train`), the gate threshold selected and every model
evaluated on held-out episodes, and the output (model_dir.py, report.py): a format-2 model
directory (model.yaml, backbone.onnx, memory.safetensors, MODEL_CARD.md), one complete model
directory per runnable baseline under baselines/, report.json and plots; checkpoints/ after
every stage (checkpoints.py) so `--resume` continues where a run stopped.
"""

from .backbone import Frames, to_input, train_backbone
from .checkpoints import CHECKPOINTS, Checkpoints, load_tensors
from .cli import main
from .config import QUICK, QUICK_DATA, TrainerConfig, TrainerError, quick_config, with_topics
from .episodes import Episodes, Split, action_setup, prepare, split_episodes
from .features import compute_features
from .model_dir import BASELINE_DIR, joint_limits, memory_config, output_groups
from .pipeline import (
    Run,
    evaluate_held_out,
    features_of,
    fit_backbone,
    run,
    saved_features,
    start,
    train_memories,
    write_outputs,
)
from .report import REPORT_FILE

__all__ = [
    'BASELINE_DIR', 'CHECKPOINTS', 'QUICK', 'QUICK_DATA', 'REPORT_FILE', 'Checkpoints',
    'Episodes', 'Frames', 'Run', 'Split', 'TrainerConfig', 'TrainerError', 'action_setup',
    'compute_features', 'evaluate_held_out', 'features_of', 'fit_backbone', 'joint_limits',
    'load_tensors', 'main', 'memory_config', 'output_groups', 'prepare', 'quick_config', 'run',
    'saved_features', 'split_episodes', 'start', 'to_input', 'train_backbone', 'train_memories',
    'with_topics', 'write_outputs',
]
