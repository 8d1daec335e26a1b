"""Train a model directory on your own demonstrations: `python -m aura_ros train --data PATH`.

    ros2 bag record ...                                  # teleoperate, record
    python -m aura_ros train --data demo.mcap --out models/mine [--config train.yaml]
    ros2 run aura_ros aura_node --ros-args -p model_dir:=models/mine

Pipeline (seeded, CPU, one thread):

1. Demonstrations (`aura_ros.data.load_demonstrations`): rosbag2 (a bag or a folder of bags) or a
   LeRobot dataset, aligned on the camera clock. Episodes are split into train / held out (by
   episode; a single long episode by time blocks).
2. Normalisation: joint and action statistics of the data; targets are absolute positions or,
   with `action_mode: delta`, increments (point 0 over the joint state, point i over point i-1),
   as the runtime integrates them.
3. Backbone, frozen afterwards: a small CNN per camera trained on the data as an autoencoder
   whose reconstruction loss weights pixels by how far they are from the dataset's mean image,
   with frames that hold such rare pixels over-sampled, plus a frame-level action read-out.
   The action loss alone would keep only what the current frame's action needs and drop a cue
   lamp seen long before it matters; the memory needs it in the features. Or a user's ONNX
   image encoder (`backbone: onnx`, see `aura_ros.training.onnx_encoder`).
4. Features of every frame computed once; AURA and the baselines (always-write, no memory by
   default) trained on them with `aura_ros.memory.training.train` (write-dropout warm-up, gate
   phase with long IB offsets, carried state over whole episodes); the gate threshold selected on
   the held-out episodes (`select_threshold`); every model evaluated there with the state carried
   over whole episodes.
5. Output: a format-2 model directory (model.yaml, backbone.onnx, memory.safetensors,
   MODEL_CARD.md), baselines/, report.json and plots; checkpoints/ after every stage so
   `--resume` continues where a run stopped.
"""

import argparse
import json
import math
import os
import platform
import shlex
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from aura_ros.data.config import fields_of
from aura_ros.memory import MemoryConfig, build_model, load_checkpoint, save_checkpoint
from aura_ros.memory.training import (
    FeatureEpisode,
    GateCollapseWarning,
    TrainHistory,
    TrainingConfig,
    TrainingError,
    evaluate,
    select_threshold,
    set_threshold,
    train,
)
from aura_ros.progress import Progress
from aura_ros.runtime.cnn import CameraBackbone
from aura_ros.training import distributed

CHECKPOINTS = 'checkpoints'
STATE_FILE = 'state.json'
REPORT_FILE = 'report.json'
BASELINE_DIR = 'baselines'
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.25, 0.25, 0.25)
METHODS_KNOWN = ('always_write', 'gru', 'no_memory', 'kv_cache')


class TrainerError(ValueError):
    """The trainer cannot run with these settings or data; the message says why."""


# -- configuration --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainerConfig:
    """Everything that decides the trained model (`--config train.yaml`); unknown keys named.

    `data` is a DataConfig mapping (topics, names, image size, chunk, ...), `training` a
    TrainingConfig mapping (iterations, IB offsets, loss weights, ...). The rest is here.
    """

    name: str = ''                    # model name (default: the output directory's name)
    seed: int = 0
    action_mode: str = 'absolute'     # absolute | delta
    held_out: float = 0.2             # share of episodes (or time blocks) held out
    time_blocks: int = 10             # one long episode: split into this many blocks
    # memory
    d_model: int = 128
    d_key: int = 32
    d_val: int = 32
    head_hidden: int = 256
    baselines: tuple[str, ...] = ('always_write', 'no_memory')
    # per-baseline TrainingConfig overrides, e.g. {gru: {warmup_iters: 400}}: a baseline too
    # slow to train on AURA's budget here (the state-matched GRU) gets a smaller one, named in
    # the model card
    baseline_training: dict = field(default_factory=dict)
    select_thresholds: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
    select_tolerance: float = 0.05    # relative action error allowed for fewer writes
    # backbone
    backbone: str = 'cnn'             # cnn | onnx
    cnn_channels: tuple[int, int, int] = (16, 32, 32)
    cnn_steps: int = 1500
    cnn_batch: int = 64
    cnn_lr: float = 2e-3
    recon_size: int = 24              # the autoencoder reconstructs a recon_size^2 thumbnail
    recon_weight: float = 1.0
    recon_emphasis: float = 10.0      # extra weight of pixels far from the mean image
    rare_share: float = 0.5           # share of each batch drawn from the rarest 10% of frames
    action_weight: float = 1.0        # frame-level action read-out loss
    encoder_onnx: str = ''            # backbone: onnx -> the user's image encoder
    encoder_input: str = ''           # its image input name (default: its first input)
    encoder_output: str = ''          # its feature output name (default: its first output)
    encoder_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    encoder_std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    # what the model publishes: {group: [action names]} (default: one group per command topic
    # when the data has several, else one ~/action_chunk) and the limits its targets are clipped
    # to: {joint: [lower, upper]} (default: the URDF of `urdf`, else the data's
    # /robot_description; never guessed from the data)
    output_groups: dict = field(default_factory=dict)
    joint_limits: dict = field(default_factory=dict)
    urdf: str = ''                    # a URDF file to read joint limits from (--urdf)
    data: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        def need(ok: bool, key: str, what: str) -> None:
            if not ok:
                raise TrainerError(f'train config: {key} must be {what}, got '
                                   f'{getattr(self, key)!r}')

        def is_int(v, low=0):
            return isinstance(v, int) and not isinstance(v, bool) and v >= low

        def is_num(v, low=-math.inf, high=math.inf):
            return isinstance(v, (int, float)) and not isinstance(v, bool) \
                and math.isfinite(v) and low <= v <= high

        need(isinstance(self.name, str), 'name', 'a string')
        need(self.action_mode in ('absolute', 'delta'), 'action_mode', "'absolute' or 'delta'")
        need(self.backbone in ('cnn', 'onnx'), 'backbone', "'cnn' or 'onnx'")
        need(is_num(self.held_out, 0.01, 0.9), 'held_out', 'a share in [0.01, 0.9]')
        for key in ('seed',):
            need(is_int(getattr(self, key)), key, 'a non-negative integer')
        for key in ('time_blocks', 'd_model', 'd_key', 'd_val', 'head_hidden', 'cnn_batch',
                    'recon_size'):
            need(is_int(getattr(self, key), 1), key, 'a positive integer')
        need(is_int(self.time_blocks, 2), 'time_blocks', 'an integer >= 2')
        need(is_int(self.cnn_steps), 'cnn_steps', 'a non-negative integer')
        for key in ('cnn_lr', 'recon_weight', 'recon_emphasis', 'action_weight',
                    'select_tolerance'):
            need(is_num(getattr(self, key), 0.0), key, 'a non-negative number')
        need(is_num(self.rare_share, 0.0, 1.0), 'rare_share', 'a share in [0, 1]')
        object.__setattr__(self, 'baselines', tuple(self.baselines))
        unknown = [b for b in self.baselines if b not in METHODS_KNOWN]
        need(not unknown, 'baselines', f'a list of {", ".join(METHODS_KNOWN)}')
        need(isinstance(self.baseline_training, dict)
             and set(self.baseline_training) <= set(self.baselines)
             and all(isinstance(v, dict) for v in self.baseline_training.values()),
             'baseline_training', 'a mapping from baselines listed in baselines to mappings of '
             'TrainingConfig fields')
        object.__setattr__(self, 'select_thresholds', tuple(self.select_thresholds))
        need(bool(self.select_thresholds) and all(is_num(t, 0.0, 1.0)
                                                  for t in self.select_thresholds),
             'select_thresholds', 'a list of numbers in [0, 1]')
        object.__setattr__(self, 'cnn_channels', tuple(self.cnn_channels))
        need(len(self.cnn_channels) == 3 and all(is_int(c, 1) for c in self.cnn_channels),
             'cnn_channels', 'three positive integers')
        for key in ('encoder_mean', 'encoder_std'):
            object.__setattr__(self, key, tuple(getattr(self, key)))
            need(len(getattr(self, key)) == 3 and all(is_num(v) for v in getattr(self, key)),
                 key, 'three numbers (R, G, B)')
        if self.backbone == 'onnx':
            need(bool(self.encoder_onnx), 'encoder_onnx', 'the path of an ONNX image encoder '
                 '(backbone: onnx)')
        need(isinstance(self.output_groups, dict) and all(
            isinstance(k, str) and isinstance(v, (list, tuple)) and v
            for k, v in self.output_groups.items()), 'output_groups',
            'a mapping group name -> list of action names')
        need(isinstance(self.joint_limits, dict) and all(
            isinstance(v, (list, tuple)) and len(v) == 2 and all(is_num(b) for b in v)
            and v[0] < v[1] for v in self.joint_limits.values()), 'joint_limits',
            'a mapping joint -> [lower, upper] with lower < upper')
        need(isinstance(self.urdf, str), 'urdf', 'the path of a URDF file')
        need(isinstance(self.data, dict), 'data', 'a mapping of DataConfig fields')
        need(isinstance(self.training, dict), 'training', 'a mapping of TrainingConfig fields')
        # fail now on a bad training field
        for method in self.baseline_training:
            self.training_config(method)
        if self.training_config().gate_target == 'hint' and not self.data.get('hint_topic'):
            raise TrainerError("train config: training: gate_target 'hint' needs the frames "
                               'worth remembering marked in the data: set data: hint_topic '
                               '(and hint_match, hint_frames; docs/training.md)')

    def training_config(self, method: str = 'aura') -> TrainingConfig:
        """`training`, with `baseline_training[method]` over it for a baseline."""
        where = 'training' if method not in self.baseline_training \
            else f'baseline_training.{method}'
        overrides = {**self.training, **self.baseline_training.get(method, {})}
        known = {f.name for f in fields(TrainingConfig)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TrainerError(f'train config: unknown {where} key(s): {", ".join(unknown)}; '
                               f'known: {", ".join(sorted(known))}')
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
        try:
            return TrainingConfig(**{'seed': self.seed, **values})
        except TrainingError as err:
            raise TrainerError(f'train config: {where}: {err}') from err

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: Any, where: str = 'train config') -> 'TrainerConfig':
        data = fields_of(cls, data, where, TrainerError)
        try:
            return cls(**data)
        except TrainerError as err:
            raise TrainerError(f'{where}: {str(err).removeprefix("train config: ")}') from err

    @classmethod
    def load(cls, path: str | Path) -> 'TrainerConfig':
        path = Path(path)
        if not path.is_file():
            raise TrainerError(f'{path}: no such config file')
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise TrainerError(f'{path}: not valid YAML ({err})') from err
        return cls.from_dict(data, where=str(path))


QUICK = {'cnn_steps': 30, 'cnn_batch': 32, 'd_model': 32, 'd_key': 8, 'd_val': 8,
         'head_hidden': 32, 'cnn_channels': (8, 16, 16), 'recon_size': 16,
         'select_thresholds': (0.3, 0.5, 0.7),
         'training': {'warmup_iters': 6, 'gate_iters': 6, 'carry_iters': 3, 'window': 32,
                      'batch': 4, 'offsets': (1, 2, 4, 8, 16)}}
QUICK_DATA = {'image_short_side': 32, 'chunk': 4}


def quick_config(cfg: TrainerConfig) -> TrainerConfig:
    """A run of seconds that checks the whole pipeline; the user's own settings stay."""
    changes = {k: v for k, v in QUICK.items() if k not in ('training',)}
    return replace(cfg, **changes, training={**QUICK['training'], **cfg.training},
                   data={**QUICK_DATA, **cfg.data})


# -- data -----------------------------------------------------------------------------------------


@dataclass
class Split:
    """Episodes for training and held out, and how they were split."""

    train: list
    held_out: list
    how: str


def split_episodes(demos, cfg: TrainerConfig) -> Split:
    """By episode (a seeded shuffle, at least one each side); one episode: by time blocks, every
    k-th block held out, the train blocks between two held-out ones kept as one episode."""
    from aura_ros.data import Episode

    episodes = list(demos.episodes)
    if len(episodes) >= 2:
        rng = np.random.default_rng(cfg.seed)
        order = rng.permutation(len(episodes))
        n = min(len(episodes) - 1, max(1, round(cfg.held_out * len(episodes))))
        held = sorted(order[:n].tolist())
        return Split([e for i, e in enumerate(episodes) if i not in held],
                     [episodes[i] for i in held],
                     f'by episode: {len(episodes) - n} train, {n} held out (seed {cfg.seed})')
    ep = episodes[0]
    blocks = np.array_split(np.arange(len(ep)), cfg.time_blocks)
    n = max(1, round(cfg.held_out * cfg.time_blocks))
    held = set(np.linspace(cfg.time_blocks - 1, 0, n, endpoint=False).round().astype(int)
               .tolist()) if n > 1 else {cfg.time_blocks - 1}
    train_eps, held_eps, run = [], [], []

    def piece(rows, tag):
        sl = slice(int(rows[0]), int(rows[-1]) + 1)
        return Episode(name=f'{ep.name}[{sl.start}:{sl.stop}]', stamps=ep.stamps[sl],
                       images={k: v[sl] for k, v in ep.images.items()}, joints=ep.joints[sl],
                       actions=ep.actions[sl],
                       features=None if ep.features is None else ep.features[sl],
                       hints=None if ep.hints is None else ep.hints[sl])

    for b, rows in enumerate(blocks):
        if b in held:
            if run:
                train_eps.append(piece(np.concatenate(run), 'train'))
                run = []
            held_eps.append(piece(rows, 'held'))
        else:
            run.append(rows)
    if run:
        train_eps.append(piece(np.concatenate(run), 'train'))
    return Split(train_eps, held_eps, f'one episode of {len(ep)} frames in {cfg.time_blocks} '
                                      f'time blocks: {len(held)} held out')


def targets_of(actions: np.ndarray, joints: np.ndarray, joint_index: np.ndarray,
               mode: str) -> np.ndarray:
    """[T, chunk, n_actions] targets in joint units: absolute, or the runtime's increments."""
    if mode == 'absolute':
        return actions.astype(np.float32)
    q = joints[:, joint_index][:, None, :]
    previous = np.concatenate([q, actions[:, :-1]], axis=1)
    return (actions - previous).astype(np.float32)


def action_setup(demos, mode: str, train_eps) -> tuple[np.ndarray, dict]:
    """The joint index of every action (delta) and the statistics of joints and targets."""
    joint_index = np.zeros(len(demos.action_names), int)
    if mode == 'delta':
        missing = [a for a in demos.action_names if a not in demos.joint_names]
        if missing:
            raise TrainerError(f'action_mode delta needs every action in the joint state; '
                               f'not joints: {", ".join(missing)} (use absolute)')
        joint_index = np.array([demos.joint_names.index(a) for a in demos.action_names])
    stats = demos.stats()       # joints over all frames; the targets' own statistics below
    targets = np.concatenate([targets_of(e.actions, e.joints, joint_index, mode)
                              .reshape(-1, len(demos.action_names)) for e in train_eps])
    stats['actions'] = {'mean': targets.mean(0).tolist(),
                        'std': np.maximum(targets.std(0), 1e-3).tolist()}
    return joint_index, stats


# -- backbone -------------------------------------------------------------------------------------


class Decoder(nn.Module):
    """features -> thumbnails [B, cameras, 3, s, s] (only for training the backbone)."""

    def __init__(self, d_model: int, cameras: int, size: int):
        super().__init__()
        self.cameras, self.size = cameras, size
        self.base = max(1, size // 4)
        self.inp = nn.Linear(d_model, 32 * self.base * self.base * cameras)
        self.up = nn.Sequential(
            nn.ConvTranspose2d(32, 32, 4, stride=2, padding=1), nn.GELU(),
            nn.ConvTranspose2d(32, 3, 4, stride=2, padding=1))

    def forward(self, z):
        B = z.shape[0]
        x = self.inp(F.gelu(z)).reshape(B * self.cameras, 32, self.base, self.base)
        x = self.up(x)
        x = F.interpolate(x, size=(self.size, self.size), mode='bilinear', align_corners=False)
        return x.reshape(B, self.cameras, 3, self.size, self.size)


def to_input(images: np.ndarray, mean=IMAGE_MEAN, std=IMAGE_STD) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> normalised float [N, 3, H, W] (the camera spec's normalisation)."""
    x = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


class Frames:
    """Every training frame, addressable by a flat index: images, normalised joints, targets."""

    def __init__(self, episodes, cameras, joint_stats, target_fn):
        self.episodes, self.cameras = episodes, cameras
        self.offsets = np.cumsum([0] + [len(e) for e in episodes])
        self.jm = np.asarray(joint_stats['mean'], np.float32)
        self.js = np.asarray(joint_stats['std'], np.float32)
        self.targets = [target_fn(e) for e in episodes]

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def hinted(self) -> np.ndarray:
        """Flat indices of the frames the data marks as worth remembering (hints)."""
        return np.concatenate([np.flatnonzero(e.hints) + o for e, o in
                               zip(self.episodes, self.offsets, strict=False)
                               if e.hints is not None] or [np.zeros(0, int)])

    def locate(self, idx: np.ndarray):
        e = np.searchsorted(self.offsets, idx, side='right') - 1
        return e, idx - self.offsets[e]

    def batch(self, idx: np.ndarray):
        e, t = self.locate(np.asarray(idx))
        rows = list(zip(e, t, strict=True))
        images = [to_input(np.stack([self.episodes[i].images[c][j] for i, j in rows]))
                  for c in self.cameras]
        joints = torch.from_numpy(np.stack([(self.episodes[i].joints[j] - self.jm) / self.js
                                            for i, j in rows]).astype(np.float32))
        target = torch.from_numpy(np.stack([self.targets[i][j] for i, j in rows]))
        return images, joints, target


def thumbnails(images: list, size: int) -> torch.Tensor:
    return torch.stack([F.adaptive_avg_pool2d(x, size) for x in images], 1)


def train_backbone(cfg: TrainerConfig, demos, frames: Frames, log) -> tuple[nn.Module, dict]:
    """Autoencoder (mean-image-emphasised reconstruction) + frame-level action read-out."""
    torch.manual_seed(cfg.seed)
    cams = demos.cameras
    backbone = CameraBackbone(cams, [demos.size_of(c) for c in cams], len(demos.joint_names),
                              cfg.d_model, cfg.cnn_channels)
    decoder = Decoder(cfg.d_model, len(cams), cfg.recon_size)
    readout = nn.Sequential(nn.LayerNorm(cfg.d_model, elementwise_affine=False),
                            nn.Linear(cfg.d_model, demos.chunk * len(demos.action_names)))
    params = [*backbone.parameters(), *decoder.parameters(), *readout.parameters()]
    rng = np.random.default_rng([cfg.seed, 11])
    n = len(frames)
    # Mean and spread of every thumbnail pixel over (a sample of) the data, and how rare each
    # frame's pixels are: frames that show something seldom seen (a cue lamp) are over-sampled.
    # Hinted frames, where the data has them, are the over-sampled ones instead: when much else
    # is rare too (an arm pushed around, DART), rarity alone loses the few frames that matter.
    sample = rng.choice(n, min(n, 2048), replace=False)
    thumbs = []
    for chunk in np.array_split(sample, max(1, len(sample) // 256)):
        thumbs.append(thumbnails(frames.batch(chunk)[0], cfg.recon_size))
    thumbs = torch.cat(thumbs)
    mean_img, std_img = thumbs.mean(0), thumbs.std(0) + 0.05
    rarity = ((thumbs - mean_img).abs() / std_img).flatten(1).amax(1).numpy()
    rare = sample[rarity >= np.quantile(rarity, 0.9)]
    hinted = frames.hinted()
    rare_text = 'the rarest tenth of frames'
    if len(hinted):
        rare, rare_text = hinted, f'the {len(hinted)} hinted frames'
    steps = cfg.cnn_steps
    if steps == 0:
        backbone.eval()
        return backbone, {'steps': 0}
    opt = torch.optim.Adam(params, lr=cfg.cnn_lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.cnn_lr, total_steps=steps,
                                                pct_start=0.1)

    def losses(images, joints, target):
        z = backbone(*images, joints)
        thumb = thumbnails(images, cfg.recon_size)
        weight = 1.0 + cfg.recon_emphasis * ((thumb - mean_img).abs() / std_img).clamp(max=3) / 3
        recon = (weight * (decoder(z) - thumb) ** 2).mean()
        act = F.mse_loss(readout(z), target.flatten(1))
        return cfg.recon_weight * recon + cfg.action_weight * act, recon.item(), act.item()

    # under torchrun every rank draws the global batch (cnn_batch per rank) and trains on its
    # rows; DDP averages the gradients (aura_ros.memory.parallel)
    step = distributed.data_parallel(backbone, decoder, readout)
    batch, mine = cfg.cnn_batch * distributed.world(), distributed.rows(cfg.cnn_batch)
    history = []
    bar = Progress('backbone', steps, 'steps')
    for _ in bar:
        k = int(round(cfg.rare_share * batch)) if len(rare) else 0
        idx = np.concatenate([rng.choice(rare, k), rng.integers(0, n, batch - k)])
        loss, recon, act = step(losses, *frames.batch(idx[mine]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        history.append(distributed.mean_record({'recon': recon, 'action': act}))
        bar.set_postfix(recon=f'{recon:.3g}', action=f'{act:.3g}')
    backbone.eval()
    for p in backbone.parameters():
        p.requires_grad_(False)
    tail = history[-max(1, steps // 10):]
    result = {'steps': steps, 'rare': rare_text,
              'recon': float(np.mean([h['recon'] for h in tail])),
              'action': float(np.mean([h['action'] for h in tail])), 'history': history}
    log(f'backbone: {steps} steps, reconstruction {result["recon"]:.4f}, frame action '
        f'{result["action"]:.4f} (last tenth)')
    return backbone, result


@torch.no_grad()
def compute_features(backbone, episodes, cameras, joint_stats, batch: int = 256,
                     encode=None, what: str = 'features') -> list[torch.Tensor]:
    """[T, d_model] features of every frame of every episode (the frozen backbone, once;
    under torchrun each rank computes every world-th episode and all get all)."""

    def owner(i: int) -> int:
        return i % distributed.world()

    jm = np.asarray(joint_stats['mean'], np.float32)
    js = np.asarray(joint_stats['std'], np.float32)
    out = []
    total = sum(len(e) for e in episodes)
    bar = Progress(what, total, 'frames', enabled=total > 0)
    for i, ep in enumerate(episodes):
        if owner(i) != distributed.rank():
            out.append(None)
            continue
        if not cameras:
            out.append(torch.from_numpy(np.asarray(ep.features, np.float32)))
            bar.update(len(ep))
            continue
        parts = []
        for start in range(0, len(ep), batch):
            sl = slice(start, start + batch)
            joints = torch.from_numpy(((ep.joints[sl] - jm) / js).astype(np.float32))
            if encode is not None:
                parts.append(encode([ep.images[c][sl] for c in cameras], joints))
            else:
                images = [to_input(ep.images[c][sl]) for c in cameras]
                parts.append(backbone(*images, joints))
            bar.update(len(joints))
        out.append(torch.cat(parts).float())
    bar.close()
    return distributed.gather_list(out, owner)


# -- checkpoints ----------------------------------------------------------------------------------


DEFAULT_CONFIG = TrainerConfig().to_dict()     # keys a checkpoint from an older trainer lacks


# What each stage's result depends on. A changed key retrains from the first stage that reads
# it: the split, statistics and backbone (and so the features) read BACKBONE_KEYS; each memory
# model reads its own training config (`training` with its `baseline_training`) and
# MEMORY_KEYS. Everything else (name, selection, output groups, limits) is redone on every run.
BACKBONE_KEYS = ('seed', 'action_mode', 'held_out', 'time_blocks', 'd_model', 'backbone',
                 'cnn_channels', 'cnn_steps', 'cnn_batch', 'cnn_lr', 'recon_size', 'recon_weight',
                 'recon_emphasis', 'rare_share', 'action_weight', 'encoder_onnx',
                 'encoder_input', 'encoder_output', 'encoder_mean', 'encoder_std', 'data')
MEMORY_KEYS = ('d_key', 'd_val', 'head_hidden')


class Checkpoints:
    """DIR/checkpoints: state.json (config, stages done, histories) and the tensors of each stage.

    A resumed run skips every stage already done whose inputs did not change, and redoes the
    first one whose inputs did and everything after it: a changed backbone or data setting
    retrains from the backbone; a changed memory or gate setting keeps the backbone and its
    features and retrains only the memory models it concerns; added baselines train on their
    own. `reused` and `redone` say which (the run logs them). The data must be the same source.
    """

    def __init__(self, out: Path, cfg: TrainerConfig, source: str, resume: bool):
        self.dir = out / CHECKPOINTS
        self.path = self.dir / STATE_FILE
        self.reused: list[str] = []
        self.redone: list[str] = []
        config = cfg.to_dict()
        if resume and self.path.is_file():
            self.state = json.loads(self.path.read_text())
            if self.state.get('source') != source:
                raise TrainerError(f'{self.path}: cannot resume, it was trained on '
                                   f'{self.state.get("source")!r}, not {source!r}')
            self._invalidate(self.state['config'], cfg)
            self.state['config'] = config
        elif resume:
            raise TrainerError(f'{self.path}: nothing to resume (no checkpoint state)')
        else:
            self.state = {'config': config, 'source': source, 'done': [], 'histories': {},
                          'backbone': {}, 'wall_s': 0.0}
        self.dir.mkdir(parents=True, exist_ok=True)

    def _invalidate(self, old: dict, cfg: TrainerConfig) -> None:
        """Forget the stages whose inputs changed between the checkpoint's config and `cfg`."""
        new = cfg.to_dict()

        def changed(keys) -> list[str]:
            return [k for k in keys if old.get(k, DEFAULT_CONFIG.get(k)) != new.get(k)]

        def training(config: dict, method: str) -> Optional[dict]:
            try:
                merged = TrainerConfig.from_dict({**DEFAULT_CONFIG, **config})
                return merged.training_config(method).to_dict()
            except TrainerError:
                return None

        done = self.state['done']
        stages = {s.split(':')[0] for s in done if s != 'done'}
        if changed(BACKBONE_KEYS):
            forget = stages
            why = {m: f'{", ".join(changed(BACKBONE_KEYS))} changed' for m in forget}
        else:
            memory = changed(MEMORY_KEYS)
            forget, why = set(), {}
            for method in stages - {'backbone', 'features'}:
                what = memory or (['training'] if training(old, method) !=
                                  training(new, method) else [])
                if what:
                    forget.add(method)
                    why[method] = f'{", ".join(what)} changed'
        self.state['done'] = [s for s in done if s.split(':')[0] not in forget and s != 'done']
        for method in forget:
            self.state['histories'].pop(method, None)
        if 'backbone' in forget:
            self.state['backbone'] = {}
        self.reused = sorted(stages - forget, key=_stage_order)
        self.redone = [f'{m} ({why[m]})' for m in sorted(forget, key=_stage_order)]

    def done(self, stage: str) -> bool:
        return stage in self.state['done']

    def mark(self, stage: str) -> None:
        if stage not in self.state['done']:
            self.state['done'].append(stage)
        self.save()

    def save(self) -> None:
        if not distributed.is_main():      # under torchrun rank 0 alone writes
            return
        tmp = self.path.with_suffix('.tmp')
        tmp.write_text(json.dumps(self.state, indent=1))
        tmp.replace(self.path)

    def file(self, name: str) -> Path:
        return self.dir / name


def _stage_order(stage: str) -> tuple:
    return ({'backbone': 0, 'features': 1, 'aura': 2}.get(stage, 3), stage)


def save_tensors(path: Path, tensors: dict) -> None:
    from safetensors.torch import save_file
    if not distributed.is_main():
        return
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))


def load_tensors(path: Path) -> dict:
    from safetensors.torch import load_file
    return load_file(str(path))


# -- the model directory --------------------------------------------------------------------------


def model_spec(cfg: TrainerConfig, demos, memory: MemoryConfig, stats: dict, name: str,
               cameras_spec: Optional[list] = None):
    """The format-2 ModelSpec of the trained model: the only place the trainer builds one."""
    from dataclasses import replace as with_fields

    from aura_ros.runtime.model_dir import CameraSpec, ModelSpec, OutputGroup, Stats

    cameras = cameras_spec if cameras_spec is not None else [
        CameraSpec(name=c, width=demos.size_of(c)[1], height=demos.size_of(c)[0],
                   mean=IMAGE_MEAN, std=IMAGE_STD) for c in demos.cameras]
    transports = dict(zip(demos.cameras, demos.camera_transports, strict=False))
    cameras = [with_fields(c, transport=transports.get(c.name, 'raw')) for c in cameras]
    return ModelSpec(name=name, cameras=tuple(cameras), joint_names=demos.joint_names,
                     action_names=demos.action_names, action_period_s=demos.action_period_s,
                     memory=memory,
                     joint_stats=Stats(**stats['joints']) if demos.joint_names else None,
                     action_stats=Stats(**stats['actions']), action_mode=cfg.action_mode,
                     output_groups=tuple(OutputGroup(g, tuple(j))
                                         for g, j in output_groups(cfg, demos).items()),
                     joint_limits=joint_limits(cfg, demos)[0])


def output_groups(cfg: TrainerConfig, demos) -> dict:
    """{group: action names}: the config's, else one per command topic of the data ({}: the one
    ~/action_chunk). TrainerError when they do not cover every action once."""
    groups = dict(cfg.output_groups) or {g: list(n) for g, n in demos.action_groups}
    named = [a for names in groups.values() for a in names]
    if groups and (sorted(named) != sorted(demos.action_names)):
        raise TrainerError(f'train config: output_groups must name every action once; they name '
                           f'{", ".join(named)}, the actions are '
                           f'{", ".join(demos.action_names)}')
    return groups


def joint_limits(cfg: TrainerConfig, demos) -> tuple[dict, str]:
    """({action: (lower, upper)}, where they came from): the config's, else the --urdf file's,
    else the data's robot_description; only the actions' (the targets clipped)."""
    from aura_ros.data.urdf import read_urdf_limits

    if cfg.joint_limits:
        unknown = sorted(set(cfg.joint_limits) - set(demos.action_names))
        if unknown:
            raise TrainerError(f'train config: joint_limits names {", ".join(unknown)}, not '
                               f'actions ({", ".join(demos.action_names)})')
        limits, origin = cfg.joint_limits, 'the train config'
    elif cfg.urdf:
        limits, origin = read_urdf_limits(cfg.urdf), cfg.urdf
    elif demos.joint_limits:
        limits, origin = demos.joint_limits, 'the robot_description recorded with the data'
    else:
        return {}, 'none given (no joint_limits, --urdf or recorded robot_description)'
    return ({a: tuple(limits[a]) for a in demos.action_names if a in limits}, origin)


def memory_config(cfg: TrainerConfig, demos, d_model: int, threshold: float) -> MemoryConfig:
    return MemoryConfig(d_model=d_model, d_key=cfg.d_key, d_val=cfg.d_val,
                        d_action=len(demos.action_names), chunk=demos.chunk,
                        head_hidden=cfg.head_hidden, gate_threshold=threshold)


# -- report ---------------------------------------------------------------------------------------


def plot_report(out: Path, histories: dict, results: dict, selection: list) -> list[str]:
    """losses.png, write_rate.png and error_vs_writes.png beside report.json."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    written = []
    fig, ax = plt.subplots(figsize=(7, 4))
    for method, hist in histories.items():
        values, marks = [], []
        for phase in ('warmup', 'gate', 'carry'):
            marks.append(len(values))
            values += [r.get('total', r['action']) for r in hist.get('phases', {}).get(phase, [])]
        if values:
            ax.plot(values, label=method, lw=1)
    ax.set_yscale('log')
    ax.set_xlabel('update (warm-up, gate phase, carried)')
    ax.set_ylabel('training loss (AURA: total objective)')
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / 'losses.png', dpi=100)
    plt.close(fig)
    written.append('losses.png')

    fig, ax = plt.subplots(figsize=(7, 3))
    aura = histories.get('aura', {}).get('phases', {})
    rates = [r['write_rate'] for p in ('warmup', 'gate', 'carry') for r in aura.get(p, [])]
    ax.plot(rates, lw=1)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel('AURA update (warm-up writes at random)')
    ax.set_ylabel('write rate')
    fig.tight_layout()
    fig.savefig(out / 'write_rate.png', dpi=100)
    plt.close(fig)
    written.append('write_rate.png')

    fig, ax = plt.subplots(figsize=(6, 4))
    if selection:
        ax.plot([r['writes_per_episode'] for r in selection],
                [r['action_error'] for r in selection], 'o-', label='AURA (threshold sweep)')
        for r in selection:
            ax.annotate(f'{r["threshold"]:g}', (r['writes_per_episode'], r['action_error']),
                        fontsize=7)
    for method, res in results.items():
        if method != 'aura':
            ax.plot([res['writes_per_episode']], [res['action_error']], 's', label=method)
    ax.set_xlabel('writes per held-out episode')
    ax.set_ylabel('held-out action error (normalised MSE)')
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / 'error_vs_writes.png', dpi=100)
    plt.close(fig)
    written.append('error_vs_writes.png')
    return written


CARD = """# {name}

AURA memory policy trained on your demonstrations by `python -m aura_ros train`.

## Data

- Source: {source}
- Cameras (height x width, transport): {cameras}; joints: {joints}; actions: {actions}
- Outputs: {outputs}; joint limits ({limits_from}): {limits}
- {frames} frames in {episodes} episodes{chained}; action chunk {chunk} x {period:.4f} s
- Split: {split}
- Actions: {action_mode} ({mode_text}); normalised with the statistics in model.yaml

## How it was made

    {command}

Wall time {wall:.0f} s on {machine} (torch {torch_version}, 1 thread). Seed {seed}.
Config: `{config}`

Backbone: {backbone_text}

Memory: AURA (d_key {d_key}, d_val {d_val}, state {state_bytes} bytes for any episode length),
trained with `aura_ros.memory.training.train`: {recipe} Baselines on the same frozen features,
same call: {baselines}.

## Held-out results

{held_count} held-out episodes, the memory state carried over each whole episode from its first
frame. Action error = mean squared error of the normalised action chunk (lower is better).
The gate threshold {threshold} was selected on these episodes: the fewest writes whose error is
within {tolerance:.0%} of the best (so AURA's numbers are slightly optimistic). The interval is a
95% bootstrap over blocks of 256 consecutive frames.

| model | action error [95% interval] | writes / episode | write rate |
|---|---|---|---|
{table}

Threshold sweep (AURA): {sweep}
{collapse}
Files: report.json (all numbers), losses.png, write_rate.png, error_vs_writes.png.
"""


def model_card(**kw) -> str:
    return CARD.format(**kw)


# -- the pipeline ---------------------------------------------------------------------------------


def run(demos, cfg: TrainerConfig, out: Path, command: str, resume: bool = False,
        log=print) -> dict:
    """Train and write the model directory `out` from loaded `Demonstrations`."""
    from aura_ros.runtime.model_dir import save_model_dir

    torch.set_num_threads(1)
    start = time.time()
    if not distributed.is_main():
        log = lambda *_: None   # noqa: E731  (rank 0 speaks for the run)
    out = Path(out)
    name = cfg.name or out.name or 'model'
    tcfg = cfg.training_config()
    ckpt = Checkpoints(out, cfg, demos.source, resume)
    if resume:
        log(f'resuming from {ckpt.path}: reusing {", ".join(ckpt.reused) or "nothing"}'
            + (f'; retraining {"; ".join(ckpt.redone)}' if ckpt.redone else ''))
    if cfg.backbone == 'onnx' and not demos.cameras:
        raise TrainerError('backbone: onnx needs camera data; this data is features-in')
    split = split_episodes(demos, cfg)
    log(f'{demos.source}: {demos.frames} frames, {len(demos.episodes)} episode(s); {split.how}')
    groups = output_groups(cfg, demos)
    limits, limits_from = joint_limits(cfg, demos)
    log('outputs: ' + ('; '.join(f'~/{g} ({", ".join(j)})' for g, j in groups.items())
                       if groups else f'~/action_chunk ({", ".join(demos.action_names)})')
        + f'; joint limits of {len(limits)} of {len(demos.action_names)} actions from '
        f'{limits_from}')
    joint_index, stats = action_setup(demos, cfg.action_mode, split.train)
    am = np.asarray(stats['actions']['mean'], np.float32)
    asd = np.asarray(stats['actions']['std'], np.float32)

    def target_fn(ep):
        t = targets_of(ep.actions, ep.joints, joint_index, cfg.action_mode)
        return ((t - am) / asd).astype(np.float32)

    # backbone
    encode, cameras_spec, backbone = None, None, None
    if cfg.backbone == 'onnx':
        from aura_ros.training.onnx_encoder import OnnxEncoder

        encoder = OnnxEncoder(cfg, demos)
        encode, cameras_spec, d_model = encoder.encode, encoder.cameras_spec(), encoder.d_model
        backbone = encoder
    elif demos.cameras:
        backbone = CameraBackbone(demos.cameras, [demos.size_of(c) for c in demos.cameras],
                                  len(demos.joint_names), cfg.d_model,
                                  cfg.cnn_channels)
        d_model = cfg.d_model
        if ckpt.done('backbone'):
            backbone.load_state_dict(load_tensors(ckpt.file('backbone.safetensors')))
            backbone.eval()
        else:
            frames = Frames(split.train, demos.cameras, stats['joints'], target_fn)
            backbone, result = train_backbone(cfg, demos, frames, log)
            save_tensors(ckpt.file('backbone.safetensors'), backbone.state_dict())
            ckpt.state['backbone'] = result
            ckpt.mark('backbone')
    else:
        d_model = int(demos.episodes[0].features.shape[1])

    # features
    if ckpt.done('features'):
        saved = load_tensors(ckpt.file('features.safetensors'))
        z_train = [saved[f'train{i}'] for i in range(len(split.train))]
        z_held = [saved[f'held{i}'] for i in range(len(split.held_out))]
    else:
        model_like = backbone if cfg.backbone == 'cnn' else None
        z_train = compute_features(model_like, split.train, demos.cameras, stats['joints'],
                                   encode=encode, what='features (train)')
        z_held = compute_features(model_like, split.held_out, demos.cameras, stats['joints'],
                                  encode=encode, what='features (held out)')
        save_tensors(ckpt.file('features.safetensors'),
                     {**{f'train{i}': z for i, z in enumerate(z_train)},
                      **{f'held{i}': z for i, z in enumerate(z_held)}})
        ckpt.mark('features')
    train_eps = [FeatureEpisode(z, target_fn(e), name=e.name, hint=e.hints)
                 for z, e in zip(z_train, split.train, strict=True)]
    if tcfg.gate_target == 'hint' and not any(e.hints is not None and e.hints.any()
                                              for e in split.train):
        dc = data_config(cfg)
        raise TrainerError(f'{demos.source}: no training frame is hinted: no message on '
                           f'{dc.hint_topic}' + (f' matches {dc.hint_match!r}' if dc.hint_match
                                                 else '') + ' within the camera frames')
    held_eps = [FeatureEpisode(z, target_fn(e), name=e.name)
                for z, e in zip(z_held, split.held_out, strict=True)]

    # memory models
    config = memory_config(cfg, demos, d_model, tcfg.threshold)
    models, histories, collapses = {}, {}, []
    for method in ('aura', *cfg.baselines):
        torch.manual_seed(cfg.seed)
        model = build_model(method, config)
        path = ckpt.file(f'{method}.safetensors')
        history = TrainHistory.from_dict(ckpt.state['histories'].get(method, {}))
        todo = [p for p in ('warmup', 'gate', 'carry') if not ckpt.done(f'{method}:{p}')]
        if len(todo) < 3:
            load_checkpoint(path, model, config=config)
        if todo:
            log(f'{method}: training ({", ".join(todo)})')

            def on_phase_end(phase, hist, method=method, model=model, path=path):
                if distributed.is_main():
                    save_checkpoint(model, path)
                ckpt.state['histories'][method] = hist.to_dict()
                ckpt.mark(f'{method}:{phase}')

            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter('always', GateCollapseWarning)
                train(model, train_eps, cfg.training_config(method), chained=demos.chained,
                      phases=todo, name=method, history=history, progress=True,
                      on_phase_end=on_phase_end)
            for w in caught:
                if issubclass(w.category, GateCollapseWarning):
                    log(f'WARNING: {w.message}')
                else:
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        models[method], histories[method] = model, history.to_dict()
        collapses += history.collapses
    if not distributed.is_main():     # the evaluation and every file are rank 0's
        return {}

    # held-out evaluation and threshold selection
    aura = models['aura']
    threshold, sweep = select_threshold(aura, held_eps, cfg.select_thresholds,
                                        cfg.select_tolerance, tcfg.loss, demos.chained)
    results = {m: evaluate(model, held_eps, loss=tcfg.loss, chained=demos.chained)
               for m, model in models.items()}
    if results['aura']['writes_per_episode'] == 0:
        collapses.append({'model': 'aura', 'phase': 'held-out', 'kind': 'closed',
                          'write_rate': 0.0, 'advice': 'no write on any held-out episode at '
                          f'the selected threshold {threshold}'})
        log(f'WARNING: AURA wrote nothing on the held-out episodes at threshold {threshold}')
    for m, r in results.items():
        log(f'held-out {m}: action error {r["action_error"]:.4f} [{r["action_error_ci"][0]:.4f}, '
            f'{r["action_error_ci"][1]:.4f}], writes/episode '
            f'{r["writes_per_episode"]:.1f}, write rate {r["write_rate"]:.3f}')
    log(f'gate threshold {threshold} (sweep: ' + ', '.join(
        f'{r["threshold"]:g}: {r["action_error"]:.4f}/{r["writes_per_episode"]:.1f}w'
        for r in sweep) + ')')

    # the model directory
    set_threshold(aura, threshold)
    config = config.replace(gate_threshold=threshold)
    spec = model_spec(cfg, demos, config, stats, name, cameras_spec)
    wall = ckpt.state['wall_s'] + time.time() - start
    card = model_card(
        name=name, source=demos.source, cameras=', '.join(
            f'{c} ({demos.size_of(c)[0]}x{demos.size_of(c)[1]}, '
            f'{dict(zip(demos.cameras, demos.camera_transports, strict=False)).get(c, "raw")})'
            for c in demos.cameras) or 'none (features in)',
        joints=', '.join(demos.joint_names), actions=', '.join(demos.action_names),
        outputs='; '.join(f'~/{g} ({", ".join(j)})' for g, j in groups.items())
        or f'~/action_chunk ({", ".join(demos.action_names)})', limits_from=limits_from,
        limits=', '.join(f'{k} [{v[0]:g}, {v[1]:g}]' for k, v in limits.items()) or 'none',
        frames=demos.frames, episodes=len(demos.episodes),
        chained=' (chained: one never-reset stream)' if demos.chained else '',
        chunk=demos.chunk, period=demos.action_period_s, split=split.how,
        action_mode=cfg.action_mode,
        mode_text='joint position targets' if cfg.action_mode == 'absolute' else
        'increments: point 0 over the joint state, point i over point i-1',
        command=command, wall=wall, machine=machine(),
        torch_version=torch.__version__, seed=cfg.seed, config=json.dumps(cfg.to_dict()),
        backbone_text=backbone_text(cfg, ckpt.state.get('backbone', {}), demos),
        d_key=cfg.d_key, d_val=cfg.d_val, state_bytes=config.memory_bytes(1),
        recipe=recipe_text(tcfg, data_config(cfg)), baselines=baselines_text(cfg),
        held_count=len(held_eps), threshold=threshold, tolerance=cfg.select_tolerance,
        table='\n'.join(f'| {m} | {r["action_error"]:.3g} [{r["action_error_ci"][0]:.3g}, '
                        f'{r["action_error_ci"][1]:.3g}] | {r["writes_per_episode"]:.1f} | '
                        f'{r["write_rate"]:.3f} |' for m, r in results.items()),
        sweep=', '.join(f'threshold {r["threshold"]:g}: error {r["action_error"]:.3g}, '
                        f'{r["writes_per_episode"]:.1f} writes' for r in sweep),
        collapse=('\n**Gate collapse**: ' + '; '.join(
            f'{c["model"]} {c["phase"]}: {c["kind"]} ({c["advice"]})' for c in collapses)
            + '\n') if collapses else '')
    if cfg.backbone == 'onnx':
        backbone_arg = backbone.export(out / 'backbone.candidate.onnx', spec)
    else:
        backbone_arg = backbone
    save_model_dir(out, spec, backbone_arg, aura, card=card)
    if cfg.backbone == 'onnx':
        Path(backbone_arg).unlink(missing_ok=True)
    (out / BASELINE_DIR).mkdir(exist_ok=True)
    for m in cfg.baselines:
        save_checkpoint(models[m], out / BASELINE_DIR / f'{m}.safetensors',
                        metadata={'model': name})
        save_baseline_dir(out, spec, m, models[m], results[m])
    report = {'name': name, 'source': demos.source, 'command': command, 'wall_s': wall,
              'machine': f'{machine()}, torch {torch.__version__}, 1 thread',
              'ranks': distributed.world(),
              'config': cfg.to_dict(), 'training': tcfg.to_dict(), 'split': split.how,
              'frames': demos.frames, 'episodes': len(demos.episodes),
              'held_out_episodes': len(held_eps), 'threshold': threshold,
              'threshold_sweep': sweep, 'held_out': results, 'collapses': collapses,
              'output_groups': groups, 'joint_limits': {k: list(v) for k, v in limits.items()},
              'joint_limits_from': limits_from,
              'backbone': {k: v for k, v in ckpt.state.get('backbone', {}).items()
                           if k != 'history'},
              'histories': histories}
    report['plots'] = plot_report(out, histories, results, sweep)
    (out / REPORT_FILE).write_text(json.dumps(report, indent=1) + '\n')
    for path in out.rglob('*'):   # safetensors writes 0600; an installed model must be readable
        if path.is_file():
            path.chmod(0o644)
    ckpt.state['wall_s'] = wall
    ckpt.mark('done')
    log(f'wrote {out} in {wall:.0f} s')
    return report


# The runtime runs these baselines as they are (MEMORY_KINDS of the model directory).
RUNNABLE_BASELINES = ('always_write', 'gru', 'no_memory')


def save_baseline_dir(out: Path, spec, method: str, model, result: dict) -> Optional[Path]:
    """<out>/baselines/<method>/: a complete model directory of a baseline that aura_node runs
    as it is (`-p model_dir:=<out>/baselines/<method>`): the same model.yaml and backbone, the
    baseline's memory; always-write at gate threshold 0, so it writes every step."""
    from dataclasses import replace as with_fields

    from aura_ros.runtime.model_dir import BACKBONE_FILE, save_model_dir

    if method not in RUNNABLE_BASELINES:
        return None
    threshold = 0.0 if method == 'always_write' else spec.memory.gate_threshold
    memory = spec.memory.replace(gate_threshold=threshold)
    baseline = with_fields(spec, name=f'{spec.name}_{method}', memory=memory)
    target = out / BASELINE_DIR / method
    backbone = out / BACKBONE_FILE if not spec.features_in else None
    card = (f'# {baseline.name}\n\nThe {method} baseline of `{spec.name}` (../../MODEL_CARD.md): '
            f'the same backbone, trained on the same features with the same call. Held-out '
            f'action error {result["action_error"]:.3g}, {result["writes_per_episode"]:.1f} '
            f'writes per episode.\n\n    ros2 run aura_ros aura_node --ros-args -p '
            f'model_dir:={target}\n')
    save_model_dir(target, baseline, backbone, model, card=card)
    return target


def machine() -> str:
    return f'{platform.machine()} CPU, {os.cpu_count()} cores'


def baselines_text(cfg: TrainerConfig) -> str:
    """The baselines, each with the budget it got where it is not AURA's."""
    def one(method: str) -> str:
        own = cfg.baseline_training.get(method)
        return method + (' (' + ', '.join(f'{k} {v}' for k, v in own.items()) + ')'
                         if own else '')
    return ', '.join(one(m) for m in cfg.baselines) or 'none'


def recipe_text(t: TrainingConfig, data) -> str:
    """The memory's training recipe, in the card's words."""
    if t.gate_target == 'hint':
        match = f' matching `{data.hint_match}`' if data.hint_match else ''
        return (f'{t.warmup_iters} warm-up updates writing exactly on the hinted frames (messages '
                f'on {data.hint_topic}{match}, {data.hint_frames} frame(s) each), '
                f'{t.gate_iters} gate-phase updates teaching the gate those frames (balanced '
                f"cross-entropy), {t.carry_iters} updates of the rest under the gate's own "
                'writes with the state carried over whole episodes. The gate was taught where '
                'to write by the hints, not by the action loss.')
    return (f'{t.warmup_iters} warm-up updates writing at random (rate {t.warmup_write_rate}), '
            f'{t.gate_iters} gate-phase updates (action + {t.w_ib} x IB scored at step offsets '
            f'{list(t.offsets)} + {t.w_sparse} x sparsity), {t.carry_iters} updates with the '
            'state carried over whole episodes.')


def backbone_text(cfg: TrainerConfig, result: dict, demos) -> str:
    if cfg.backbone == 'onnx':
        return (f"the user's ONNX image encoder {cfg.encoder_onnx} (frozen), its output "
                f'concatenated with the normalised joints.')
    if not demos.cameras:
        return 'none: the data holds features (features-in model).'
    return (f'SmallCNN per camera (channels {list(cfg.cnn_channels)}, d_model {cfg.d_model}), '
            f'trained {result.get("steps", 0)} steps as an autoencoder (reconstruction of '
            f'{cfg.recon_size}x{cfg.recon_size} thumbnails, pixels far from the mean image '
            f'weighted up to {1 + cfg.recon_emphasis:g}x, {cfg.rare_share:.0%} of each batch from '
            f'{result.get("rare", "the rarest tenth of frames")}) plus a frame-level action '
            f'read-out, then frozen; last '
            f'tenth: reconstruction {result.get("recon", float("nan")):.4f}, frame action '
            f'{result.get("action", float("nan")):.4f}.')


# -- command line ---------------------------------------------------------------------------------


def with_topics(cfg: TrainerConfig, args: argparse.Namespace) -> TrainerConfig:
    """The config with the command-line data flags (topics, names, --urdf) in it (so they are in
    the model card and a resumed run must use the same)."""
    values = dict(cfg.data)
    if getattr(args, 'image_topic', None):
        values['image_topics'] = list(args.image_topic)
    if getattr(args, 'joints_topic', None):
        values['joints_topic'] = args.joints_topic
    topics = getattr(args, 'action_topic', None)
    if topics:
        values['action_topic'] = topics[0] if len(topics) == 1 else list(topics)
    for flag, key in (('joints', 'joint_names'), ('actions', 'action_names'),
                      ('extra_joints', 'extra_joints')):
        if getattr(args, flag, None):
            values[key] = list(getattr(args, flag))
    if getattr(args, 'urdf', None):
        cfg = replace(cfg, urdf=args.urdf)
    return replace(cfg, data=values)


def data_config(cfg: TrainerConfig):
    """The DataConfig of the config's `data` mapping (unknown keys named)."""
    from aura_ros.data.config import DataConfig

    return DataConfig.from_dict(dict(cfg.data), where='train config: data')


def main(args: argparse.Namespace) -> int:
    """`python -m aura_ros train --data PATH --out DIR` (arguments: aura_ros/cli.py); under
    `torchrun` data-parallel (aura_ros.training.distributed)."""
    with distributed.session():
        return _main(args)


def _main(args: argparse.Namespace) -> int:
    from aura_ros.data import DataError

    missing = [f'--{k}' for k in ('data', 'out') if not getattr(args, k, None)]
    if missing:
        print(f'error: python -m aura_ros train needs {" and ".join(missing)}', file=sys.stderr)
        return 2
    try:
        cfg = TrainerConfig.load(args.config) if args.config else TrainerConfig()
        if args.quick:
            cfg = quick_config(cfg)
        out = Path(args.out)
        if out.exists() and any(out.iterdir()) and not args.resume and not args.force:
            print(f'error: {out} exists and is not empty (--resume to continue a run there, '
                  '--force to train into it anew)', file=sys.stderr)
            return 2
        cfg = with_topics(cfg, args)
        dcfg = data_config(cfg)
        from aura_ros.data import load_demonstrations

        # under torchrun rank 0 builds the decode cache; the others map it after a barrier
        demos = distributed.main_first(lambda: load_demonstrations(args.data, dcfg))
        command = 'python -m aura_ros ' + ' '.join(shlex.quote(a) for a in sys.argv[1:]) \
            if sys.argv[1:2] == ['train'] else f'python -m aura_ros train --data {args.data} ' \
            f'--out {args.out}' + (' --quick' if args.quick else '')
        if distributed.active():
            command = command.replace('python -m', f'torchrun ({distributed.world()} ranks) -m', 1)
        run(demos, cfg, out, command, resume=args.resume)
    except (TrainerError, TrainingError, DataError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('\ninterrupted; continue with the same command and --resume (checkpoints in '
              f'{Path(args.out) / CHECKPOINTS})', file=sys.stderr)
        return 130
    return 0


