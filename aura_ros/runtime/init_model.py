"""`python -m aura_ros init-model`: a complete, randomly initialised model directory.

Useful to bring up the node and its plumbing before any training has run, and as the fixture of
the runtime tests. The weights are random (seeded), so the actions mean nothing.
"""

import argparse
from pathlib import Path
from typing import Optional, Sequence

import torch

from aura_ros.memory import AuraMemLayer, ConfigError, MemoryConfig

from .cnn import CameraBackbone
from .model_dir import TRANSPORTS, ImageSpec, ModelDirError, ModelSpec, OutputGroup, save_model_dir

CARD = """# {name}

Randomly initialised (seed {seed}) by `python -m aura_ros init-model`: not trained, its actions
mean nothing. For plumbing tests only.
"""


def init_model_dir(out_dir: str | Path, image_size: int = 64, d_model: int = 128,
                   joints: Sequence[str] = ('j1', 'j2'), actions: Sequence[str] = ('a1', 'a2'),
                   chunk: int = 4, seed: int = 0, name: str = 'random',
                   action_period_s: float = 0.1,
                   memory: Optional[dict] = None, cameras: Optional[Sequence] = None,
                   features_in: bool = False, groups: Optional[dict] = None,
                   limits: Optional[dict] = None, action_mode: str = 'absolute') -> ModelSpec:
    """Write a random backbone + AuraMemLayer model directory; `memory` overrides config fields.

    `image_size` is an int (square) or a (height, width) pair: the one camera 'image'.
    `cameras`: several, as ImageSpecs (their sizes and transports); `features_in`: none (no
    backbone). `groups`: {group: [actions]} output groups; `limits`: {action: (lower, upper)}.
    """
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    if features_in:
        specs: tuple = ()
    elif cameras:
        specs = tuple(cameras)
    else:
        specs = (ImageSpec(width=width, height=height),)
    config = MemoryConfig(d_model=d_model, d_action=len(actions), chunk=chunk, **(memory or {}))
    spec = ModelSpec(name=name, cameras=specs, joint_names=tuple(joints),
                     action_names=tuple(actions), action_period_s=action_period_s,
                     memory=config, action_mode=action_mode,
                     output_groups=tuple(OutputGroup(g, tuple(j))
                                         for g, j in (groups or {}).items()),
                     joint_limits=dict(limits or {}))
    torch.manual_seed(seed)
    backbone = None if features_in else CameraBackbone(
        tuple(c.name for c in specs), [(c.height, c.width) for c in specs],
        len(spec.joint_names), d_model, (16, 32, 32))
    layer = AuraMemLayer(config)
    save_model_dir(out_dir, spec, backbone, layer, card=CARD.format(name=name, seed=seed))
    return spec


def parse_camera(text: str) -> ImageSpec:
    """--camera NAME[:HxW][:compressed] -> ImageSpec (64x64 raw unless given)."""
    name, *rest = text.split(':')
    height = width = 64
    transport = 'raw'
    for part in rest:
        if part in TRANSPORTS:
            transport = part
        else:
            h, sep, w = part.partition('x')
            if not (sep and h.isdigit() and w.isdigit()):
                raise ModelDirError(f'--camera {text}: expected NAME[:HxW][:raw|compressed]')
            height, width = int(h), int(w)
    return ImageSpec(width=width, height=height, name=name, transport=transport)


def parse_groups(items: Sequence[str]) -> dict:
    """--group NAME=a,b (repeated) -> {NAME: [a, b]}."""
    out = {}
    for item in items or ():
        group, sep, names = item.partition('=')
        if not sep or not group or not names:
            raise ModelDirError(f'--group {item}: expected NAME=action,action,...')
        out[group] = [n.strip() for n in names.split(',')]
    return out


def parse_limits(items: Sequence[str]) -> dict:
    """--limit ACTION=LOWER,UPPER (repeated) -> {ACTION: (LOWER, UPPER)}."""
    out = {}
    for item in items or ():
        action, sep, bounds = item.partition('=')
        try:
            lower, upper = (float(v) for v in bounds.split(','))
        except ValueError:
            sep = ''
        if not sep or not action:
            raise ModelDirError(f'--limit {item}: expected ACTION=LOWER,UPPER')
        out[action] = (lower, upper)
    return out


def main(args: argparse.Namespace) -> int:
    """`python -m aura_ros init-model` (arguments: aura_ros/cli.py)."""
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.force:
        print(f'error: {out} exists and is not empty (use --force to write into it)')
        return 2
    try:
        spec = init_model_dir(out, image_size=args.image_size, d_model=args.d_model,
                              joints=args.joints, actions=args.actions, chunk=args.chunk,
                              seed=args.seed, name=args.name,
                              cameras=[parse_camera(c) for c in args.camera or ()],
                              features_in=args.features_in, groups=parse_groups(args.group),
                              limits=parse_limits(args.limit), action_mode=args.action_mode,
                              action_period_s=args.period,
                              memory={} if args.gate_threshold is None else
                              {'gate_threshold': args.gate_threshold})
    except (ConfigError, ModelDirError) as err:
        print(f'error: {err}')
        return 2
    cameras = ', '.join(f'{c.name} {c.height}x{c.width} {c.transport}' for c in spec.cameras)
    print(f'wrote {out}: cameras {cameras or "none (features in)"}, '
          f'{spec.n_joints} joints, d_model {spec.memory.d_model}, '
          f'{spec.memory.d_action} actions x chunk {spec.chunk} in '
          f'{", ".join(f"~/{g.name}" for g in spec.groups)}'
          + (f', limits on {len(spec.joint_limits)}' if spec.joint_limits else ''))
    return 0
