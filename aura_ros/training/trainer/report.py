"""Stage 6's words and pictures: report.json, the model card and the training plots."""

import json
from pathlib import Path

import torch

from aura_ros import provenance
from aura_ros.memory.training import TrainingConfig
from aura_ros.training import distributed

from .config import TrainerConfig

REPORT_FILE = 'report.json'


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

Wall time {wall:.0f} s on {machine} (torch {torch_version}, {threads} thread(s)). Seed {seed}.
Config: `{config}`

Backbone: {backbone_text}

Memory: AURA (d_key {d_key}, d_val {d_val}, state {state_bytes} bytes for any episode length),
trained with `aura_ros.memory.training.train`: {recipe} Baselines on the same frozen features,
same call: {baselines}.

## Held-out results

{held_count} held-out episodes, the memory state carried over each whole episode from its first
frame. Action error = mean squared error of the normalised action chunk (lower is better).
The gate threshold {threshold} was selected on these episodes: the fewest writes whose error is
within {tolerance:.0%} of the best (so AURA's numbers are slightly optimistic); with no write
AURA's error is {no_write:.3g}, what its memory gains is the difference. `gate_threshold` is a
run-time parameter of aura_node: the threshold that does best held out need not do best on the
robot (docs/training.md, "The gate threshold"). The interval is a 95% bootstrap over blocks of
256 consecutive frames.

| model | action error [95% interval] | writes / episode | write rate |
|---|---|---|---|
{table}

Threshold sweep (AURA): {sweep}
{collapse}
Files: report.json (all numbers), losses.png, write_rate.png, error_vs_writes.png.
"""


def model_card(**kw) -> str:
    return CARD.format(**kw)

def machine() -> str:
    return provenance.describe()


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
    loss = ('the later action loss' if t.utility_loss == 'action' else
            "the later actions' NLL under a training-only mixture head (trained beside the "
            f'action loss, x {t.w_mixture:g})')
    scored = (f'scored at step offsets {list(t.offsets)}' if t.utility == 'counterfactual'
              else f'a write scored by the gradient of {loss} in its strength, '
              f'under random writes at rate {t.warmup_write_rate}')
    target = ('IB towards the writes that cut the later action loss by '
              f'{t.margin:g} of it' if t.write_budget is None else
              'IB towards the share of each window whose writes help the later actions most, '
              f'{t.write_budget[0]:g} annealed to {t.write_budget[1]:g}')
    return (f'{t.warmup_iters} warm-up updates writing at random (rate {t.warmup_write_rate}), '
            f'{t.gate_iters} gate-phase updates (action + {t.w_ib} x {target}, {scored}, '
            f'+ {t.w_sparse} x sparsity), {t.carry_iters} updates '
            'with the state carried over whole episodes. No labels: the gate learned where to '
            'write from the demonstrated actions alone.')


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


def card_text(run, spec, evaluation, wall: float) -> str:
    """MODEL_CARD.md of a finished run (`run`: the pipeline's Run, `evaluation` its held-out
    Evaluation)."""
    cfg, demos, tcfg = run.cfg, run.demos, run.cfg.training_config()
    results, sweep, collapses = evaluation.results, evaluation.sweep, evaluation.collapses
    transports = dict(zip(demos.cameras, demos.camera_transports, strict=False))
    return model_card(
        name=spec.name, source=demos.source, cameras=', '.join(
            f'{c} ({demos.size_of(c)[0]}x{demos.size_of(c)[1]}, {transports.get(c, "raw")})'
            for c in demos.cameras) or 'none (features in)',
        joints=', '.join(demos.joint_names), actions=', '.join(demos.action_names),
        outputs=outputs_text(run.groups, demos), limits_from=run.limits_from,
        limits=', '.join(f'{k} [{v[0]:g}, {v[1]:g}]' for k, v in run.limits.items()) or 'none',
        frames=demos.frames, episodes=len(demos.episodes),
        chained=' (chained: one never-reset stream)' if demos.chained else '',
        chunk=demos.chunk, period=demos.action_period_s, split=run.episodes.split.how,
        action_mode=cfg.action_mode,
        mode_text='joint position targets' if cfg.action_mode == 'absolute' else
        'increments: point 0 over the joint state, point i over point i-1',
        command=run.command, wall=wall, machine=machine(),
        torch_version=torch.__version__, threads=cfg.threads, seed=cfg.seed,
        config=json.dumps(cfg.to_dict()),
        backbone_text=backbone_text(cfg, run.ckpt.state.get('backbone', {}), demos),
        d_key=cfg.d_key, d_val=cfg.d_val, state_bytes=spec.memory.memory_bytes(1),
        recipe=recipe_text(tcfg, cfg.data), baselines=baselines_text(cfg),
        held_count=len(run.episodes.split.held_out), threshold=evaluation.threshold,
        tolerance=cfg.select_tolerance, no_write=evaluation.no_write_error,
        table='\n'.join(f'| {m} | {r["action_error"]:.3g} [{r["action_error_ci"][0]:.3g}, '
                        f'{r["action_error_ci"][1]:.3g}] | {r["writes_per_episode"]:.1f} | '
                        f'{r["write_rate"]:.3f} |' for m, r in results.items()),
        sweep=', '.join(f'threshold {r["threshold"]:g}: error {r["action_error"]:.3g}, '
                        f'{r["writes_per_episode"]:.1f} writes' for r in sweep),
        collapse=('\n**Gate collapse**: ' + '; '.join(
            f'{c["model"]} {c["phase"]}: {c["kind"]} ({c["advice"]})' for c in collapses)
            + '\n') if collapses else '')


def write_report(out: Path, run, evaluation, histories: dict, wall: float) -> dict:
    """report.json (every number of the run) and its plots; returns the report."""
    cfg, demos = run.cfg, run.demos
    report = {'name': run.name, 'source': demos.source, 'command': run.command, 'wall_s': wall,
              'machine': f'{machine()}, torch {torch.__version__}, {cfg.threads} thread(s)',
              'ranks': distributed.world(),
              'config': cfg.to_dict(), 'training': cfg.training_config().to_dict(),
              'split': run.episodes.split.how, 'frames': demos.frames,
              'episodes': len(demos.episodes),
              'held_out_episodes': len(run.episodes.split.held_out),
              'threshold': evaluation.threshold, 'threshold_sweep': evaluation.sweep,
              'no_write_error': evaluation.no_write_error,
              'held_out': evaluation.results, 'collapses': evaluation.collapses,
              'output_groups': run.groups,
              'joint_limits': {k: list(v) for k, v in run.limits.items()},
              'joint_limits_from': run.limits_from,
              'backbone': {k: v for k, v in run.ckpt.state.get('backbone', {}).items()
                           if k != 'history'},
              'histories': histories}
    report['plots'] = plot_report(out, histories, evaluation.results, evaluation.sweep)
    (out / REPORT_FILE).write_text(json.dumps(report, indent=1) + '\n')
    return report


def outputs_text(groups: dict, demos) -> str:
    """What the model publishes, in the log's and the card's words."""
    return '; '.join(f'~/{g} ({", ".join(j)})' for g, j in groups.items()) \
        or f'~/action_chunk ({", ".join(demos.action_names)})'
