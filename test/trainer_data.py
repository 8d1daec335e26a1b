"""Small memory-needing demonstrations built in memory, for the trainer's tests.

A planar arm (two joints) holds still; a lamp (top-left) shows the goal's colour for three frames
near the start; a GO light (top-right) comes on late; then the arm moves to the goal that only the
lamp named. The action at GO depends on a frame seen ~40 frames before.
"""

import numpy as np

from aura_ros.data import Demonstrations, Episode

GOALS = np.array([[0.8, -0.4], [-0.8, 0.4], [0.4, 0.8]], np.float32)
COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)


def episode(rng, index: int, frames: int, size: int, chunk: int, period: float) -> Episode:
    goal = int(rng.integers(len(GOALS)))
    cue_at, go_at = int(rng.integers(1, 4)), frames - 16
    q = np.zeros((frames + chunk + 1, 2), np.float32)
    for t in range(1, len(q)):
        step = np.clip(GOALS[goal] - q[t - 1], -0.1, 0.1) if t > go_at else 0.0
        q[t] = q[t - 1] + step
    images = np.full((frames, size, size, 3), 60, np.uint8)
    for t in range(frames):
        x = int((q[t, 0] + 1) / 2 * (size - 5)) + 1
        y = int((q[t, 1] + 1) / 2 * (size - 5)) + 1
        images[t, y:y + 3, x:x + 3] = 200                      # the gripper
        if cue_at <= t < cue_at + 3:
            images[t, :6, :6] = COLOURS[goal]                  # the cue lamp
        if t >= go_at:
            images[t, :4, -4:] = 255                           # GO
    actions = np.stack([q[t + 1:t + 1 + chunk] for t in range(frames)])
    stamps = 100.0 + index * 1000.0 + np.arange(frames) * period
    return Episode(name=f'synthetic#{index}', stamps=stamps, images={'image': images},
                   joints=q[:frames].copy(), actions=actions)


def cue_demonstrations(episodes: int = 8, frames: int = 48, size: int = 32, chunk: int = 4,
                       seed: int = 0) -> Demonstrations:
    rng = np.random.default_rng(seed)
    period = 0.1
    return Demonstrations(source=f'synthetic cue demonstrations (seed {seed})',
                          cameras=('image',), image_size=(size, size),
                          joint_names=('shoulder', 'elbow'), action_names=('shoulder', 'elbow'),
                          action_period_s=period, chunk=chunk,
                          episodes=[episode(rng, i, frames, size, chunk, period)
                                    for i in range(episodes)])
