"""DIR/checkpoints: what every finished stage left, so `--resume` redoes only what changed."""

import json
from pathlib import Path
from typing import Optional

from aura_ros.data.demonstrations import DataError
from aura_ros.memory.training_config import TrainingConfig
from aura_ros.training import distributed

from .config import SAVED_WITHOUT, TrainerConfig, TrainerError

CHECKPOINTS = 'checkpoints'
STATE_FILE = 'state.json'


# keys a checkpoint from an older trainer lacks: today's defaults, but for those added away from
# what the trainer did before them (SAVED_WITHOUT)
OLD_TRAINER_DEFAULTS = {**TrainerConfig().to_dict(), **SAVED_WITHOUT}
TRAINING_FIELDS = TrainingConfig().to_dict()   # TrainingConfig fields added since: as before


# What each stage's result depends on. A changed key retrains from the first stage that reads
# it: the split, statistics and backbone (and so the features) read BACKBONE_KEYS; each memory
# model reads its own training config (`training` with its `baseline_training`) and
# MEMORY_KEYS. Everything else (name, selection, output groups, limits) is redone on every run.
BACKBONE_KEYS = ('seed', 'action_mode', 'held_out', 'time_blocks', 'd_model', 'backbone',
                 'cnn_channels', 'cnn_steps', 'cnn_batch', 'cnn_lr', 'recon_size', 'recon_weight',
                 'recon_emphasis', 'rare_share', 'rarity', 'action_weight', 'encoder_onnx',
                 'encoder_input', 'encoder_output', 'encoder_mean', 'encoder_std', 'data')
MEMORY_KEYS = ('d_key', 'd_val', 'head_hidden', 'input_map', 'write_bias', 'write_decay',
               'mixture')


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
        # the TrainingConfig each memory model trains with, defaults filled in: a trainer whose
        # defaults changed since the checkpoint retrains what they concern
        self.state['trained_with'] = {**self.state.get('trained_with', {}), **{
            m: cfg.training_config(m).to_dict() for m in ('aura', *cfg.baselines)}}
        self.dir.mkdir(parents=True, exist_ok=True)

    def _invalidate(self, old: dict, cfg: TrainerConfig) -> None:
        """Forget the stages whose inputs changed between the checkpoint's config and `cfg`."""
        try:          # the checkpoint's config, typed (keys an older trainer lacked: defaults)
            before = TrainerConfig.from_saved(old)
        except (TrainerError, DataError):
            before = None                   # one this trainer cannot read: compare as written
        new = cfg.to_dict()

        def changed(keys) -> list[str]:
            if before is None:
                return [k for k in keys if old.get(k, OLD_TRAINER_DEFAULTS.get(k)) != new.get(k)]
            return [k for k in keys if getattr(before, k) != getattr(cfg, k)]

        trained_with = self.state.get('trained_with', {})

        def training(config: Optional[TrainerConfig], method: str):
            if config is before and method in trained_with:     # as the checkpoint recorded,
                return {**TRAINING_FIELDS, **trained_with[method]}  # later fields at defaults
            return None if config is None else config.training_config(method).to_dict()

        done = self.state['done']
        stages = {s.split(':')[0] for s in done if s != 'done'}
        # a baseline this config leaves out keeps its checkpoint (for a later run that lists it
        # again) and is neither reused nor retrained here
        unlisted = stages - {'backbone', 'features', 'aura', *cfg.baselines}
        if changed(BACKBONE_KEYS):
            forget = stages
            why = {m: f'{", ".join(changed(BACKBONE_KEYS))} changed' for m in forget}
        else:
            memory = changed(MEMORY_KEYS)
            forget, why = set(), {}
            for method in stages - {'backbone', 'features'} - unlisted:
                what = memory or (['training'] if training(before, method) !=
                                  training(cfg, method) else [])
                if what:
                    forget.add(method)
                    why[method] = f'{", ".join(what)} changed'
        self.state['done'] = [s for s in done if s.split(':')[0] not in forget and s != 'done']
        for method in forget:
            self.state['histories'].pop(method, None)
        if 'backbone' in forget:
            self.state['backbone'] = {}
        self.reused = sorted(stages - forget - unlisted, key=_stage_order)
        self.redone = [f'{m} ({why[m]})' for m in sorted(forget - unlisted, key=_stage_order)]

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
