"""The action contract: a model's output chunk -> absolute joint position targets per group.

A controller such as joint_trajectory_controller reads `positions` as absolute targets, whatever
the model predicts. The model's head gives normalised numbers; this module applies, in order:

    action = out * action_stats.std + action_stats.mean      (model units -> joint units)
    absolute group:  target_i = action_i
    delta group:     target_i = q + sum_{j <= i} action_j    (q: the joint state of the step)
    target_i = clip(target_i, joint_limits)                   (each clipped value counted)

All index tables are built once per model, so a step costs a few small numpy operations.
`encode_targets` is the inverse the trainer applies to the recorded commands, kept here so the
two sides of the delta convention have one owner.
"""

from dataclasses import dataclass

import numpy as np

from .model_dir import ModelSpec


def encode_targets(actions: np.ndarray, joints: np.ndarray, joint_index: np.ndarray,
                   mode: str) -> np.ndarray:
    """Recorded commands [T, chunk, n_actions] -> what a model of `mode` learns to predict, in
    joint units: the commands (absolute), or the increments `ActionContract.targets` integrates
    back (delta: point 0 over the step's joint state `joints[:, joint_index]`, point i over
    point i-1)."""
    if mode == 'absolute':
        return actions.astype(np.float32)
    q = joints[:, joint_index][:, None, :]
    previous = np.concatenate([q, actions[:, :-1]], axis=1)
    return (actions - previous).astype(np.float32)


@dataclass(frozen=True)
class _Group:
    name: str
    actions: np.ndarray        # indices into action_names
    joints: np.ndarray         # indices into joint_names (delta groups), else empty
    delta: bool
    lower: np.ndarray          # per joint of the group; -inf / +inf where no limit
    upper: np.ndarray


class ActionContract:
    """Turns one de-normalised or raw chunk into the targets the node publishes."""

    def __init__(self, spec: ModelSpec):
        self.names = {}
        stats = spec.action_stats
        self.mean = np.asarray(stats.mean if stats else np.zeros(len(spec.action_names)),
                               np.float32)
        self.std = np.asarray(stats.std if stats else np.ones(len(spec.action_names)),
                              np.float32)
        self.groups = []
        for group in spec.groups:
            actions = np.array([spec.action_names.index(j) for j in group.joints])
            delta = group.mode == 'delta'
            joints = np.array([spec.joint_names.index(j) for j in group.joints] if delta else [],
                              dtype=int)
            bounds = [spec.joint_limits.get(j, (-np.inf, np.inf)) for j in group.joints]
            self.groups.append(_Group(group.name, actions, joints, delta,
                                      np.array([b[0] for b in bounds], np.float32),
                                      np.array([b[1] for b in bounds], np.float32)))
            self.names[group.name] = group.joints

    def denormalise(self, out: np.ndarray) -> np.ndarray:
        """[chunk, d_action] model output -> actions in joint units."""
        return out * self.std + self.mean

    def targets(self, action: np.ndarray, joints: np.ndarray) -> tuple[dict, int]:
        """Absolute, clipped targets {group: [chunk, n_group]} and how many values were clipped.

        `action` is de-normalised [chunk, d_action]; `joints` the step's joint positions in
        joint_names order (only delta groups read them).
        """
        out, clipped = {}, 0
        for g in self.groups:
            values = action[:, g.actions]
            if g.delta:
                values = joints[g.joints].astype(np.float32) + np.cumsum(values, axis=0)
            limited = np.clip(values, g.lower, g.upper)
            clipped += int(np.count_nonzero(limited != values))
            out[g.name] = limited.astype(np.float32, copy=False)
        return out, clipped
