"""The trainer's run: six named stages from loaded demonstrations to complete model directories.

1. `prepare` (episodes.py): split by episode (or time blocks), statistics, normalised targets.
2. `fit_backbone` (backbone.py): the camera CNN trained and frozen, or the user's ONNX encoder.
3. `features_of` (features.py): every frame's features, once.
4. `train_memories`: AURA and the baselines on those features (`aura_ros.memory.training.train`).
5. `evaluate_held_out`: the gate threshold selected and every model scored on held-out episodes.
6. `write_outputs` (model_dir.py, report.py): the model directory, baselines/<name>/, report.

Each stage reads and writes its checkpoint (checkpoints.py), so `--resume` redoes only what
changed; under torchrun every rank trains and rank 0 evaluates and writes.
"""

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from aura_ros.memory import build_model, fit_input_map, load_checkpoint, save_checkpoint
from aura_ros.memory.training import (
    FeatureEpisode,
    GateCollapseWarning,
    TrainHistory,
    evaluate,
    select_threshold,
    set_threshold,
    train,
)
from aura_ros.runtime.cnn import CameraBackbone
from aura_ros.training import distributed

from .backbone import Frames, train_backbone
from .checkpoints import Checkpoints, load_tensors, save_tensors
from .config import TrainerConfig, TrainerError
from .episodes import Episodes, prepare
from .features import compute_features
from .model_dir import (
    joint_limits,
    make_readable,
    memory_config,
    model_spec,
    output_groups,
    write_model_dirs,
)
from .report import card_text, outputs_text, write_report


@dataclass
class Run:
    """What every stage of one run reads: the data, the config, where it goes, its checkpoints."""

    demos: Any
    cfg: TrainerConfig
    out: Path
    name: str
    command: str
    ckpt: Checkpoints
    episodes: Episodes
    groups: dict
    limits: dict
    limits_from: str
    log: Callable
    start: float                      # time.time() when the run began (its wall time)


@dataclass
class Backbone:
    """The frozen image side: the module (CNN or ONNX encoder), its feature size, and for the
    ONNX encoder its `encode` and camera specs."""

    module: Any
    d_model: int
    encode: Any = None
    cameras_spec: Any = None


@dataclass
class Evaluation:
    """Held-out results: the selected threshold, its sweep, AURA's error with no write (what
    its memory gains: that minus the sweep's), every model's scores, collapses."""

    threshold: float
    sweep: list
    no_write_error: float
    results: dict
    collapses: list


def run(demos, cfg: TrainerConfig, out: Path, command: str, resume: bool = False,
        log=print) -> dict:
    """Train and write the model directory `out` from loaded `Demonstrations`."""
    torch.set_num_threads(cfg.threads)
    r = start(demos, cfg, out, command, resume, log)
    backbone = fit_backbone(r)
    train_eps, held_eps = features_of(r, backbone)
    models, histories, collapses = train_memories(r, train_eps, backbone.d_model)
    if not distributed.is_main():     # the evaluation and every file are rank 0's
        return {}
    evaluation = evaluate_held_out(r, models, held_eps, collapses)
    return write_outputs(r, backbone, models, histories, evaluation)


def start(demos, cfg: TrainerConfig, out: Path, command: str, resume: bool = False,
          log=print) -> Run:
    """Open (or resume) the checkpoints and run stage 1: the split, statistics and outputs."""
    began = time.time()
    if not distributed.is_main():
        log = lambda *_: None   # noqa: E731  (rank 0 speaks for the run)
    out = Path(out)
    ckpt = Checkpoints(out, cfg, demos.source, resume)
    if resume:
        log(f'resuming from {ckpt.path}: reusing {", ".join(ckpt.reused) or "nothing"}'
            + (f'; retraining {"; ".join(ckpt.redone)}' if ckpt.redone else ''))
    if cfg.backbone == 'onnx' and not demos.cameras:
        raise TrainerError('backbone: onnx needs camera data; this data is features-in')
    episodes = prepare(demos, cfg)
    log(f'{demos.source}: {demos.frames} frames, {len(demos.episodes)} episode(s); '
        f'{episodes.split.how}')
    groups = output_groups(cfg, demos)
    limits, limits_from = joint_limits(cfg, demos)
    log(f'outputs: {outputs_text(groups, demos)}; joint limits of {len(limits)} of '
        f'{len(demos.action_names)} actions from {limits_from}')
    return Run(demos, cfg, out, cfg.name or out.name or 'model', command, ckpt, episodes,
               groups, limits, limits_from, log, began)


def fit_backbone(r: Run) -> Backbone:
    """Stage 2: the user's ONNX encoder, or the camera CNN trained (or its checkpoint loaded);
    features-in data has none."""
    cfg, demos, ckpt = r.cfg, r.demos, r.ckpt
    if cfg.backbone == 'onnx':
        from aura_ros.training.onnx_encoder import OnnxEncoder

        encoder = OnnxEncoder(cfg, demos)
        return Backbone(encoder, encoder.d_model, encoder.encode, encoder.cameras_spec())
    if not demos.cameras:
        return Backbone(None, int(demos.episodes[0].features.shape[1]))
    if ckpt.done('backbone'):
        backbone = CameraBackbone(demos.cameras, [demos.size_of(c) for c in demos.cameras],
                                  len(demos.joint_names), cfg.d_model, cfg.cnn_channels)
        backbone.load_state_dict(load_tensors(ckpt.file('backbone.safetensors')))
        backbone.eval()
        return Backbone(backbone, cfg.d_model)
    frames = Frames(r.episodes.split.train, demos.cameras, r.episodes.stats['joints'],
                    r.episodes.targets)
    backbone, result = train_backbone(cfg, demos, frames, r.log)
    save_tensors(ckpt.file('backbone.safetensors'), backbone.state_dict())
    ckpt.state['backbone'] = result
    ckpt.mark('backbone')
    return Backbone(backbone, cfg.d_model)


def features_of(r: Run, backbone: Backbone) -> tuple[list, list]:
    """Stage 3: the training and held-out FeatureEpisodes (features computed once, or loaded)."""
    split, ckpt = r.episodes.split, r.ckpt
    if ckpt.done('features'):
        z_train, z_held = saved_features(ckpt.file('features.safetensors'), split)
    else:
        module = backbone.module if r.cfg.backbone == 'cnn' else None
        z_train, z_held = (compute_features(module, eps, r.demos.cameras,
                                            r.episodes.stats['joints'], encode=backbone.encode,
                                            what=f'features ({what})')
                           for eps, what in ((split.train, 'train'),
                                             (split.held_out, 'held out')))
        save_tensors(ckpt.file('features.safetensors'),
                     {**{f'train{i}': z for i, z in enumerate(z_train)},
                      **{f'held{i}': z for i, z in enumerate(z_held)}})
        ckpt.mark('features')
    targets = r.episodes.targets
    train_eps = [FeatureEpisode(z, targets(e), name=e.name, hint=e.hints)
                 for z, e in zip(z_train, split.train, strict=True)]
    if r.cfg.training_config().gate_target == 'hint' and not any(
            e.hints is not None and e.hints.any() for e in split.train):
        dc = r.cfg.data
        raise TrainerError(f'{r.demos.source}: no training frame is hinted: no message on '
                           f'{dc.hint_topic}' + (f' matches {dc.hint_match!r}' if dc.hint_match
                                                 else '') + ' within the camera frames')
    held_eps = [FeatureEpisode(z, targets(e), name=e.name)
                for z, e in zip(z_held, split.held_out, strict=True)]
    return train_eps, held_eps


def saved_features(path: Path, split) -> tuple[list, list]:
    """The features stage's checkpoint: [T, d_model] per training and per held-out episode."""
    saved = load_tensors(path)
    return ([saved[f'train{i}'] for i in range(len(split.train))],
            [saved[f'held{i}'] for i in range(len(split.held_out))])


def train_memories(r: Run, train_eps: list, d_model: int) -> tuple[dict, dict, list]:
    """Stage 4: AURA and each baseline trained on the features, phase by phase (each phase a
    checkpoint). Returns the models, their histories and the gate collapses seen."""
    cfg, ckpt = r.cfg, r.ckpt
    config = memory_config(cfg, r.demos, d_model, cfg.training_config().threshold)
    models, histories, collapses = {}, {}, []
    for method in ('aura', *cfg.baselines):
        torch.manual_seed(cfg.seed)
        model = build_model(method, config)
        fit_input_map(model, [ep.features for ep in train_eps])   # a resumed one keeps its own
        path = ckpt.file(f'{method}.safetensors')
        history = TrainHistory.from_dict(ckpt.state['histories'].get(method, {}))
        todo = [p for p in ('warmup', 'gate', 'carry') if not ckpt.done(f'{method}:{p}')]
        if len(todo) < 3:
            load_checkpoint(path, model, config=config)
        if todo:
            r.log(f'{method}: training ({", ".join(todo)})')

            def on_phase_end(phase, hist, method=method, model=model, path=path):
                if distributed.is_main():
                    save_checkpoint(model, path)
                ckpt.state['histories'][method] = hist.to_dict()
                ckpt.mark(f'{method}:{phase}')

            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter('always', GateCollapseWarning)
                train(model, train_eps, cfg.training_config(method), chained=r.demos.chained,
                      phases=todo, name=method, history=history, progress=True,
                      on_phase_end=on_phase_end)
            for w in caught:
                if issubclass(w.category, GateCollapseWarning):
                    r.log(f'WARNING: {w.message}')
                else:
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        models[method], histories[method] = model, history.to_dict()
        collapses += history.collapses
    return models, histories, collapses


def evaluate_held_out(r: Run, models: dict, held_eps: list, collapses: list) -> Evaluation:
    """Stage 5: AURA's gate threshold selected on the held-out episodes (set on the model), and
    every model evaluated there with the state carried over whole episodes."""
    cfg, chained, log = r.cfg, r.demos.chained, r.log
    loss = cfg.training_config().loss
    aura = models['aura']
    threshold, sweep = select_threshold(aura, held_eps, cfg.select_thresholds,
                                        cfg.select_tolerance, loss, chained)
    no_write = evaluate(aura, held_eps, 1.0, loss, chained)['action_error']   # p never > 1
    results = {m: evaluate(model, held_eps, loss=loss, chained=chained)
               for m, model in models.items()}
    collapses = list(collapses)
    if results['aura']['writes_per_episode'] == 0:
        collapses.append({'model': 'aura', 'phase': 'held-out', 'kind': 'closed',
                          'write_rate': 0.0, 'advice': 'no write on any held-out episode at '
                          f'the selected threshold {threshold}'})
        log(f'WARNING: AURA wrote nothing on the held-out episodes at threshold {threshold}')
    for m, res in results.items():
        log(f'held-out {m}: action error {res["action_error"]:.4f} '
            f'[{res["action_error_ci"][0]:.4f}, {res["action_error_ci"][1]:.4f}], writes/episode '
            f'{res["writes_per_episode"]:.1f}, write rate {res["write_rate"]:.3f}')
    log(f'gate threshold {threshold} (no write: {no_write:.4f}; sweep: ' + ', '.join(
        f'{s["threshold"]:g}: {s["action_error"]:.4f}/{s["writes_per_episode"]:.1f}w'
        for s in sweep) + ')')
    set_threshold(aura, threshold)
    return Evaluation(threshold, sweep, no_write, results, collapses)


def write_outputs(r: Run, backbone: Backbone, models: dict, histories: dict,
                  evaluation: Evaluation) -> dict:
    """Stage 6: the model directory, baselines/<name>/, MODEL_CARD.md, report.json and plots."""
    cfg, out = r.cfg, r.out
    config = memory_config(cfg, r.demos, backbone.d_model, evaluation.threshold)
    spec = model_spec(cfg, r.demos, config, r.episodes.stats, r.name, backbone.cameras_spec)
    wall = r.ckpt.state['wall_s'] + time.time() - r.start
    card = card_text(r, spec, evaluation, wall)
    if cfg.backbone == 'onnx':
        image_side = backbone.module.export(out / 'backbone.candidate.onnx', spec)
    else:
        image_side = backbone.module
    write_model_dirs(out, spec, image_side, models, evaluation.results, card, cfg.baselines)
    if cfg.backbone == 'onnx':
        Path(image_side).unlink(missing_ok=True)
    report = write_report(out, r, evaluation, histories, wall)
    make_readable(out)
    r.ckpt.state['wall_s'] = wall
    r.ckpt.mark('done')
    r.log(f'wrote {out} in {wall:.0f} s')
    return report
