"""The train/serve conventions have one owner in aura_ros.runtime, and each round-trips.

Delta targets: what the trainer encodes from the recorded commands (`encode_targets`) is what the
runtime's ActionContract integrates back into those commands. Images: the tensor the trainer's
backbone learns from is, bit for bit, what the runtime's Preprocessor feeds the exported one.
"""

import numpy as np
import pytest
import torch

from aura_ros.memory import MemoryConfig
from aura_ros.runtime import ActionContract, ImageSpec, ModelSpec, OutputGroup, Stats
from aura_ros.runtime.actions import encode_targets
from aura_ros.runtime.preprocess import Preprocessor
from aura_ros.training.trainer import to_input

JOINTS = ('pan', 'lift', 'elbow', 'wrist', 'gripper')
ACTIONS = ('gripper', 'pan', 'lift')            # another order than the joint state's


def spec_of(mode: str, groups=()) -> ModelSpec:
    memory = MemoryConfig(d_model=8, d_key=4, d_val=4, d_action=len(ACTIONS), chunk=5,
                          head_hidden=8)
    return ModelSpec(name='conventions', cameras=ImageSpec(width=8, height=8),
                     joint_names=JOINTS, action_names=ACTIONS, action_period_s=0.1,
                     memory=memory, action_mode=mode, output_groups=groups,
                     action_stats=Stats((0.0,) * len(ACTIONS), (1.0,) * len(ACTIONS)))


@pytest.mark.parametrize('mode', ['delta', 'absolute'])
@pytest.mark.parametrize('groups', [(), (OutputGroup('arm', ('pan', 'lift')),
                                         OutputGroup('gripper', ('gripper',)))])
def test_encoded_targets_decode_back_to_the_commands(mode, groups):
    rng = np.random.default_rng(0)
    steps, chunk = 20, 5
    joints = rng.normal(size=(steps, len(JOINTS))).astype(np.float32)
    commands = rng.normal(size=(steps, chunk, len(ACTIONS))).astype(np.float32)
    joint_index = np.array([JOINTS.index(a) for a in ACTIONS])
    encoded = encode_targets(commands, joints, joint_index, mode)
    if mode == 'delta':
        assert not np.allclose(encoded, commands)      # increments, not the commands
    contract = ActionContract(spec_of(mode, groups))
    for t in range(steps):
        decoded, clipped = contract.targets(contract.denormalise(encoded[t]), joints[t])
        assert clipped == 0
        for name, group_joints in contract.names.items():
            columns = [ACTIONS.index(j) for j in group_joints]
            np.testing.assert_allclose(decoded[name], commands[t][:, columns], atol=1e-5)


@pytest.mark.parametrize('spec', [ImageSpec(width=12, height=8),
                                  ImageSpec(width=8, height=8, mean=(0.485, 0.456, 0.406),
                                            std=(0.229, 0.224, 0.225))])
def test_the_trainers_input_is_the_runtimes_preprocessed_image(spec):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (4, spec.height, spec.width, 3), dtype=np.uint8)
    trained_on = to_input(images, spec.mean, spec.std)
    served = np.concatenate([Preprocessor(spec)(image, 'rgb8') for image in images])
    assert trained_on.dtype == torch.float32 and trained_on.shape == served.shape
    assert torch.equal(trained_on, torch.from_numpy(served))        # bit for bit
