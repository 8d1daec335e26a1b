"""Demonstrations aligned on the camera clock: what every reader returns and the trainer reads.

A reader (rosbag2, LeRobot, a simulator) turns its source into `Demonstrations`: episodes whose
rows are camera frames. Row t of an episode holds the frame(s) at `stamps[t]`, the latest joint
state at or before it, and the action chunk the demonstrator commanded over the next `chunk`
action periods (row t, point i = the commanded position at stamps[t] + (i + 1) * action_period_s,
interpolated). Actions are always ABSOLUTE joint positions here; a delta model's targets are
derived from them by the trainer (`target - joints`), so one dataset serves both action modes.

Images are uint8 RGB at the model's input size, usually memory-mapped from the decode cache, so
an epoch reads them from disk pages and never decodes video again.
"""

from dataclasses import dataclass, field
from typing import Optional

import numpy as np


class DataError(ValueError):
    """A data source cannot give demonstrations; the message names the source and the problem."""


@dataclass
class Episode:
    """One demonstration episode: T camera frames and what the robot did around them."""

    name: str                          # where it came from, e.g. 'demo.mcap#0'
    stamps: np.ndarray                 # [T] float64 seconds: the camera clock
    images: dict[str, np.ndarray]      # camera name -> [T, H, W, 3] uint8 RGB (often a np.memmap)
    joints: np.ndarray                 # [T, n_joints] float32: latest joint state at or before t
    actions: np.ndarray                # [T, chunk, n_actions] float32: absolute commanded targets
    features: Optional[np.ndarray] = None   # [T, d] float32 for sources without cameras
    hints: Optional[np.ndarray] = None      # [T] bool: frames a hint topic marked (DataConfig)

    def __post_init__(self) -> None:
        T = len(self.stamps)
        if T == 0:
            raise DataError(f'episode {self.name}: no frames')
        for what, array in [('joints', self.joints), ('actions', self.actions),
                            *((f'images[{k}]', v) for k, v in self.images.items()),
                            *([('features', self.features)] if self.features is not None else []),
                            *([('hints', self.hints)] if self.hints is not None else [])]:
            if len(array) != T:
                raise DataError(f'episode {self.name}: {what} has {len(array)} rows, '
                                f'expected {T} (one per frame)')
        if not np.all(np.diff(self.stamps) > 0):
            raise DataError(f'episode {self.name}: frame stamps are not strictly increasing')

    def __len__(self) -> int:
        return len(self.stamps)


@dataclass
class Demonstrations:
    """Every episode of one data source, with the names and timing a model directory needs."""

    source: str                        # human description: path and format
    cameras: tuple[str, ...]           # camera names, in the model's input order (() = features)
    image_size: tuple[int, int]        # (height, width) of the images (the first camera's)
    joint_names: tuple[str, ...]
    action_names: tuple[str, ...]
    action_period_s: float
    chunk: int
    episodes: list[Episode] = field(default_factory=list)
    chained: bool = False              # consecutive episodes form one never-reset stream
    report: dict = field(default_factory=dict)   # reader's counts: frames read, dropped by reason
    # several command topics: ((group name, its action names), ...), the model's output groups
    action_groups: tuple = ()
    camera_transports: tuple = ()      # per camera 'raw' | 'compressed' as recorded (() = raw)
    joint_limits: dict = field(default_factory=dict)   # name -> (lower, upper), from a URDF
    image_sizes: dict = field(default_factory=dict)    # camera -> (h, w) where not image_size

    def __post_init__(self) -> None:
        if not self.episodes:
            raise DataError(f'{self.source}: no episodes')
        for ep in self.episodes:
            if set(ep.images) != set(self.cameras):
                raise DataError(f'episode {ep.name}: cameras {sorted(ep.images)}, expected '
                                f'{sorted(self.cameras)}')
            for cam, frames in ep.images.items():
                H, W = self.size_of(cam)
                if frames.shape[1:] != (H, W, 3) or frames.dtype != np.uint8:
                    raise DataError(f'episode {ep.name}: camera {cam} frames are '
                                    f'{frames.dtype} {list(frames.shape[1:])}, expected uint8 '
                                    f'[{H}, {W}, 3]')
            if ep.joints.shape[1:] != (len(self.joint_names),):
                raise DataError(f'episode {ep.name}: joints have shape {list(ep.joints.shape)}, '
                                f'expected [T, {len(self.joint_names)}]')
            if ep.actions.shape[1:] != (self.chunk, len(self.action_names)):
                raise DataError(f'episode {ep.name}: actions have shape '
                                f'{list(ep.actions.shape)}, expected [T, {self.chunk}, '
                                f'{len(self.action_names)}]')

    def size_of(self, camera: str) -> tuple[int, int]:
        """(height, width) of `camera`'s images (cameras may differ, aspect kept)."""
        return tuple(self.image_sizes.get(camera, self.image_size))

    @property
    def frames(self) -> int:
        return sum(len(ep) for ep in self.episodes)

    def stats(self) -> dict[str, dict[str, list[float]]]:
        """Mean and std (floored at 1e-3) of joints and actions over all frames (model.yaml)."""
        joints = np.concatenate([ep.joints for ep in self.episodes]).astype(np.float64)
        actions = np.concatenate([ep.actions.reshape(-1, ep.actions.shape[-1])
                                  for ep in self.episodes]).astype(np.float64)
        return {name: {'mean': values.mean(0).tolist(),
                       'std': np.maximum(values.std(0), 1e-3).tolist()}
                for name, values in (('joints', joints), ('actions', actions))}
