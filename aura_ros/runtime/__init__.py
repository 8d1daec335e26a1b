"""Inference runtime, no ROS: model directory, backbone session, device-resident AURA memory."""

from .actions import ActionContract
from .cnn import SmallCNN
from .errors import InputError
from .model_dir import (
    CameraSpec,
    ImageSpec,
    ModelDirError,
    ModelSpec,
    OutputGroup,
    Stats,
    load_model_dir,
    save_model_dir,
)
from .runtime import AuraRuntime, EpisodeSummary, GateRecord, StepResult

__all__ = [
    'ActionContract', 'AuraRuntime', 'CameraSpec', 'EpisodeSummary', 'GateRecord', 'ImageSpec',
    'InputError', 'load_model_dir', 'ModelDirError', 'ModelSpec', 'OutputGroup',
    'save_model_dir', 'SmallCNN', 'Stats', 'StepResult',
]
