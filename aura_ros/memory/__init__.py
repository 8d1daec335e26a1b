"""The AURA memory library: torch and numpy only, no ROS."""

from .baselines import METHODS, DenseGRU, KVCacheMemory, NoMemory, build_model
from .checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from .config import ConfigError, MemoryConfig
from .gates import (
                    AlwaysWrite,
                    GatePolicy,
                    LearnedGate,
                    NeverWrite,
                    PeriodicSchedule,
                    RandomSchedule,
                    SurpriseThreshold,
)
from .input_map import fit_input_map
from .layer import AuraMemLayer, State, state_bytes
from .losses import action_loss, ib_loss, sparsity_loss

__all__ = [
    'action_loss', 'AlwaysWrite', 'AuraMemLayer', 'build_model',
    'CheckpointError', 'ConfigError', 'DenseGRU', 'fit_input_map', 'GatePolicy', 'ib_loss',
    'KVCacheMemory', 'LearnedGate', 'load_checkpoint', 'MemoryConfig', 'METHODS', 'NeverWrite',
    'NoMemory', 'PeriodicSchedule', 'RandomSchedule', 'read_checkpoint', 'save_checkpoint',
    'sparsity_loss', 'State', 'state_bytes', 'SurpriseThreshold',
]
