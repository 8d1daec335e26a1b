"""`python -m aura_ros init-model`: a complete, randomly initialised model directory.

Useful to bring up the node and its plumbing before any training has run, and as the fixture of
the runtime tests. The weights are random (seeded), so the actions mean nothing.
"""

import argparse
from pathlib import Path
from typing import Optional, Sequence

import torch

from aura_ros.memory import AuraMemLayer, ConfigError, MemoryConfig

from .cnn import SmallCNN
from .model_dir import ImageSpec, ModelDirError, ModelSpec, save_model_dir

CARD = """# {name}

Randomly initialised (seed {seed}) by `python -m aura_ros init-model`: not trained, its actions
mean nothing. For plumbing tests only.
"""


def init_model_dir(out_dir: str | Path, image_size: int = 64, d_model: int = 128,
                   joints: Sequence[str] = ('j1', 'j2'), actions: Sequence[str] = ('a1', 'a2'),
                   chunk: int = 4, seed: int = 0, name: str = 'random',
                   action_period_s: float = 0.1,
                   memory: Optional[dict] = None) -> ModelSpec:
    """Write a random SmallCNN + AuraMemLayer model directory; `memory` overrides config fields.

    `image_size` is an int (square) or a (height, width) pair.
    """
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    config = MemoryConfig(d_model=d_model, d_action=len(actions), chunk=chunk, **(memory or {}))
    spec = ModelSpec(name=name, cameras=ImageSpec(width=width, height=height,
                                                  mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)),
                     joint_names=tuple(joints), action_names=tuple(actions),
                     action_period_s=action_period_s, memory=config)
    torch.manual_seed(seed)
    backbone = SmallCNN(height, width, len(spec.joint_names), d_model)
    layer = AuraMemLayer(config)
    save_model_dir(out_dir, spec, backbone, layer, card=CARD.format(name=name, seed=seed))
    return spec


def main(args: argparse.Namespace) -> int:
    """`python -m aura_ros init-model` (arguments: aura_ros/cli.py)."""
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.force:
        print(f'error: {out} exists and is not empty (use --force to write into it)')
        return 2
    try:
        spec = init_model_dir(out, image_size=args.image_size, d_model=args.d_model,
                              joints=args.joints, actions=args.actions, chunk=args.chunk,
                              seed=args.seed, name=args.name)
    except (ConfigError, ModelDirError) as err:
        print(f'error: {err}')
        return 2
    print(f'wrote {out}: {spec.image.height}x{spec.image.width} image, '
          f'{spec.n_joints} joints, d_model {spec.memory.d_model}, '
          f'{spec.memory.d_action} actions x chunk {spec.chunk}')
    return 0
