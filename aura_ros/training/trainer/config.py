"""The trainer's configuration (`--config train.yaml`): checked on creation, fields named."""

import argparse
import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from aura_ros.data.config import DataConfig, camera_names_from_topics, fields_of
from aura_ros.memory.config import INPUT_MAPS
from aura_ros.memory.training import TrainingConfig, TrainingError
from aura_ros.memory.training_config import mixture_can_score

METHODS_KNOWN = ('always_write', 'gru', 'no_memory', 'kv_cache')


class TrainerError(ValueError):
    """The trainer cannot run with these settings or data; the message says why."""


# The trainer's label-free gate: its IB target is the top share of each training window by the
# utility of a write, annealed from 5% to 1% of the frames over the gate phase
# (TrainingConfig.write_budget), where the layer's own default (a write must cut the later loss
# by `margin`) closed the gate on a user's bags. The utility is the gradient of the window's
# loss in the write strength (`utility: gradient`), scored under the sparse random writes of the
# warm-up (rate 0.1), where the counterfactual utility ranked cue frames barely above
# distractors; the loss is the NLL of the memory's mixture head (`mixture`, below), not the
# squared error. `training: {utility: counterfactual, write_budget: null, utility_loss: action}`
# restores the margin target. Measured in docs/training.md ("A gate without labels").
WRITE_BUDGET = (0.05, 0.01)
WARMUP_WRITE_RATE = 0.1


def training_defaults(seed: int, mixture: int = 0, given: dict | None = None) -> dict:
    """The TrainingConfig fields the trainer sets away from the memory layer's defaults. With a
    mixture head (`mixture` components) the gate's target scores writes by its NLL, where the
    `training` fields `given` leave a target it can score (the gradient utility of a squared
    error), else by the action loss."""
    given = given or {}
    by_head = mixture and mixture_can_score(given.get('utility', 'gradient'),
                                            given.get('loss', 'mse'))
    return {'seed': seed, 'write_budget': WRITE_BUDGET, 'ib_reduce': 'best',
            'utility': 'gradient', 'warmup_write_rate': WARMUP_WRITE_RATE,
            'utility_loss': 'mixture' if by_head else 'action'}


# Keys added to TrainerConfig with a default away from what the trainer did before them: a run
# saved without the key was trained this way (no input map, bias writes, no mixture head), and
# must not pass for one trained with today's default.
SAVED_WITHOUT = {'input_map': 'none', 'write_bias': True, 'mixture': 0}


@dataclass(frozen=True)
class TrainerConfig:
    """Everything that decides the trained model (`--config train.yaml`); unknown keys named.

    `data` is a DataConfig (topics, names, image size, chunk, ...), `training` a TrainingConfig
    (iterations, IB offsets, loss weights, ...); a YAML mapping given for either is parsed on
    creation (a mapping without `seed` gets the top-level one), so a bad field fails, named,
    before any data is read. `baseline_training` keeps each baseline's overrides of `training`,
    checked on creation too (`training_config(method)`). The rest is here.
    """

    name: str = ''                    # model name (default: the output directory's name)
    seed: int = 0
    threads: int = 1                  # torch threads per process (per rank under torchrun)
    action_mode: str = 'absolute'     # absolute | delta
    held_out: float = 0.2             # share of episodes (or time blocks) held out
    time_blocks: int = 10             # one long episode: split into this many blocks
    # memory
    d_model: int = 128
    d_key: int = 32
    d_val: int = 32
    head_hidden: int = 256
    # what the memory sees and how it writes (MemoryConfig.input_map / write_bias, docs/memory.md):
    # the map is fitted on the training features and saved with the model. Whitened features and
    # writes that leave b alone let always-write use its memory on the SO-101 bags with
    # distractors (docs/training.md, "A memory that holds what matters without labels");
    # none / true is the layer before them
    input_map: str = 'whiten'
    write_bias: bool = False
    # a write also fades the whole state by a learned factor (MemoryConfig.write_decay): so an
    # old task's writes under other keys do not outlive the next task's cue (docs/training.md,
    # "Forgetting on write")
    write_decay: bool = False
    # components of the memory's training-only mixture head (MemoryConfig.mixture; never run at
    # inference), whose NLL, not the squared error, scores a write for the label-free gate's
    # target (training_defaults): with the squared error the memoryless guess of the mean reach
    # already scores well, and the gate never wrote the SO-101 centre pad's cue (docs/training.md,
    # "What else was tried for the centre cue"). 0: no head, the gate scored by the action loss
    mixture: int = 4
    baselines: tuple[str, ...] = ('always_write', 'no_memory')
    # per-baseline TrainingConfig overrides, e.g. {gru: {warmup_iters: 400}}: a baseline too
    # slow to train on AURA's budget here (the state-matched GRU) gets a smaller one, named in
    # the model card
    baseline_training: dict = field(default_factory=dict)
    select_thresholds: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
    # relative action error allowed for fewer writes (docs/training.md, "The gate threshold":
    # a share of the memory's gain instead was measured, and lost in closed loop)
    select_tolerance: float = 0.05
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
    # what makes a frame rare (without hints): 'pixel' (a pixel far from its mean image) or
    # 'colour' (colours the data seldom shows: a lamp, not an arm pushed somewhere new)
    rarity: str = 'pixel'
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
    data: DataConfig = field(default_factory=DataConfig)
    # a mapping of TrainingConfig fields over the trainer's defaults (training_defaults), made a
    # TrainingConfig on creation
    training: TrainingConfig = field(default_factory=dict)

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
        need(self.input_map in INPUT_MAPS, 'input_map', ' or '.join(map(repr, INPUT_MAPS)))
        need(isinstance(self.write_bias, bool), 'write_bias', 'true or false')
        need(isinstance(self.write_decay, bool), 'write_decay', 'true or false')
        need(is_int(self.mixture), 'mixture', 'an integer >= 0')
        need(is_num(self.held_out, 0.01, 0.9), 'held_out', 'a share in [0.01, 0.9]')
        for key in ('seed',):
            need(is_int(getattr(self, key)), key, 'a non-negative integer')
        for key in ('time_blocks', 'd_model', 'd_key', 'd_val', 'head_hidden', 'cnn_batch',
                    'recon_size'):
            need(is_int(getattr(self, key), 1), key, 'a positive integer')
        need(is_int(self.time_blocks, 2), 'time_blocks', 'an integer >= 2')
        need(is_int(self.threads, 1), 'threads', 'a positive integer')
        need(is_int(self.cnn_steps), 'cnn_steps', 'a non-negative integer')
        for key in ('cnn_lr', 'recon_weight', 'recon_emphasis', 'action_weight',
                    'select_tolerance'):
            need(is_num(getattr(self, key), 0.0), key, 'a non-negative number')
        need(is_num(self.rare_share, 0.0, 1.0), 'rare_share', 'a share in [0, 1]')
        need(self.rarity in ('pixel', 'colour'), 'rarity', "'pixel' or 'colour'")
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
        need(isinstance(self.data, (dict, DataConfig)), 'data', 'a mapping of DataConfig fields')
        if isinstance(self.data, dict):
            object.__setattr__(self, 'data', DataConfig.from_dict(self.data,
                                                                  where='train config: data'))
        need(isinstance(self.training, (dict, TrainingConfig)), 'training',
             'a mapping of TrainingConfig fields')
        if isinstance(self.training, dict):
            object.__setattr__(self, 'training', self._training_of(
                training_defaults(self.seed, self.mixture, self.training), self.training,
                'training'))
        object.__setattr__(self, 'baseline_training', {m: dict(v) for m, v in
                                                       self.baseline_training.items()})
        for method in self.baseline_training:           # fail now on a bad baseline field
            self.training_config(method)
        if self.training.utility_loss == 'mixture' and not self.mixture:
            raise TrainerError("train config: training: utility_loss 'mixture' scores writes by "
                               "the memory's mixture head: set mixture > 0 (or utility_loss "
                               "'action')")
        if self.training.gate_target == 'hint' and not self.data.hint_topic:
            raise TrainerError("train config: training: gate_target 'hint' needs the frames "
                               'worth remembering marked in the data: set data: hint_topic '
                               '(and hint_match, hint_frames; docs/training.md)')

    def training_config(self, method: str = 'aura') -> TrainingConfig:
        """The TrainingConfig of `method`: `training`, with `baseline_training[method]` over it
        for a baseline."""
        if method not in self.baseline_training:
            return self.training
        return self._training_of(asdict(self.training), self.baseline_training[method],
                                 f'baseline_training.{method}')

    @staticmethod
    def _training_of(base: dict, overrides: dict, where: str) -> TrainingConfig:
        known = {f.name for f in fields(TrainingConfig)}
        unknown = sorted(map(str, set(overrides) - known))
        if unknown:
            raise TrainerError(f'train config: unknown {where} key(s): {", ".join(unknown)}; '
                               f'known: {", ".join(sorted(known))}')
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
        try:
            return TrainingConfig(**{**base, **values})
        except TrainingError as err:
            raise TrainerError(f'train config: {where}: {err}') from err

    def to_dict(self) -> dict:
        """The YAML/JSON form (the model card's, report.json's and the checkpoint's): `data` and
        `training` hold only the fields set away from their defaults, so from_dict gives the
        same config back and `--quick` can tell what the user set."""
        out = {f.name: getattr(self, f.name) for f in fields(self)
               if f.name not in ('data', 'training')}
        out['data'] = _changed(self.data.to_dict(), DataConfig().to_dict())
        if self.data.camera_names == camera_names_from_topics(self.data.image_topics):
            out['data'].pop('camera_names', None)      # derived from the topics, not set
        defaults = TrainingConfig(**training_defaults(self.seed, self.mixture))
        out['training'] = _changed(self.training.to_dict(), defaults.to_dict())
        return json.loads(json.dumps(out))

    @classmethod
    def from_dict(cls, data: Any, where: str = 'train config') -> 'TrainerConfig':
        data = fields_of(cls, data, where, TrainerError)
        try:
            return cls(**data)
        except TrainerError as err:
            raise TrainerError(f'{where}: {str(err).removeprefix("train config: ")}') from err

    @classmethod
    def from_saved(cls, data: dict, where: str = 'saved train config') -> 'TrainerConfig':
        """A config a run saved (report.json, checkpoints/state.json): a key an older trainer
        did not write takes what that trainer did (SAVED_WITHOUT), not today's default."""
        return cls.from_dict({**SAVED_WITHOUT, **data}, where)

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


def _changed(values: dict, defaults: dict) -> dict:
    return {k: v for k, v in values.items() if v != defaults.get(k)}


QUICK = {'cnn_steps': 30, 'cnn_batch': 32, 'd_model': 32, 'd_key': 8, 'd_val': 8,
         'head_hidden': 32, 'cnn_channels': (8, 16, 16), 'recon_size': 16,
         'select_thresholds': (0.3, 0.5, 0.7),
         'training': {'warmup_iters': 6, 'gate_iters': 6, 'carry_iters': 3, 'window': 32,
                      'batch': 4, 'offsets': (1, 2, 4, 8, 16)}}
QUICK_DATA = {'image_short_side': 32, 'chunk': 4}


def quick_config(cfg: TrainerConfig) -> TrainerConfig:
    """A run of seconds that checks the whole pipeline; the user's own settings stay."""
    changes = {k: v for k, v in QUICK.items() if k not in ('training',)}
    own = cfg.to_dict()
    return replace(cfg, **changes, training={**QUICK['training'], **own['training']},
                   data={**QUICK_DATA, **own['data']})


def with_topics(cfg: TrainerConfig, args: argparse.Namespace) -> TrainerConfig:
    """The config with the command-line data flags (topics, names, --urdf) in it, so a resumed
    run is compared with them and the model card's command and config show them."""
    values = cfg.to_dict()['data']
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

