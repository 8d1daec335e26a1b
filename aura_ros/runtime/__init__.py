"""Inference runtime, no ROS: model directory, backbone session, device-resident AURA memory."""

from .cnn import SmallCNN
from .errors import InputError
from .model_dir import ImageSpec, ModelDirError, ModelSpec, load_model_dir, save_model_dir
from .runtime import AuraRuntime, EpisodeSummary, GateRecord, StepResult

__all__ = [
    'AuraRuntime', 'EpisodeSummary', 'GateRecord', 'ImageSpec', 'InputError', 'load_model_dir',
    'ModelDirError', 'ModelSpec', 'save_model_dir', 'SmallCNN', 'StepResult',
]
