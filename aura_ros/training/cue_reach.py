"""Train the bundled cue-reach model: `python -m aura_ros train cue-reach [--quick] [--seed 0]`.

Pipeline (one command, seeded, CPU, single thread):

1. Demonstrations. The scripted expert runs long cue-reach episodes (tasks chained, no resets)
   with perturbations injected into the EXECUTED actions: Gaussian joint noise (per-episode
   level) and "wander" segments that drive the arm towards a wrong pad (or drift it before GO)
   for 5-20 frames. The LABEL is always the clean expert chunk for the true goal from the state
   actually reached, so the policy sees recoveries (DAgger-lite). Only states are stored; images
   are re-rendered on the fly (rendering costs ~0.07 ms a frame).
2. Backbone. `SmallCNN` (image + joints -> 128 features) is trained with linear probes on the
   layer-normed features, because the memory needs, in its input: the lamp class (dark / cue of
   pad k / distractor ring of colour k: 17-way cross-entropy; this is what makes a cue writable
   and a distractor ignorable), the GO light, and the expert's chunk for EACH of the 8 possible
   goals (so the head only has to select by the remembered goal). Frames with a lit lamp are
   over-sampled (half of each batch). Then the backbone is frozen.
3. Features of separate episodes are cached once; every memory model trains on the same
   256-frame windows that start at a cue onset (so a window's first goal is knowable).
4. Memory. Warm-up: `AuraMemLayer` with `AlwaysWrite`, action loss only (the memory learns to
   be useful and beta what to store). Then, from that warm-up, equally many updates each for
   AURA (`LearnedGate` + action + w_ib * IB + w_sparse * sparsity) and always-write (action
   loss). GRU and no-memory train from scratch for warm-up + gate updates.
5. Long episodes. The windows above all start from an EMPTY memory, but the robot runs one
   episode that never resets, so after tens of tasks W and b hold the residue of many old writes,
   which those windows never show (the first model lost half its success after ~60 tasks). AURA
   and always-write therefore get `carry_iters` more updates with truncated BPTT over consecutive
   windows of never-reset streams of chained episodes, the state carried (detached) from window
   to window (`Streams`, `train_carried`). `--carry-only` runs just this phase on an existing
   model directory, from its checkpoints and its ONNX backbone (`finetune_carried`).

The information bottleneck here scores a write at t over sparse future OFFSETS (1 ... 128
frames) instead of the library's contiguous `ib_horizon`: in this task the cue is shown up to
~100 frames before the actions that depend on it (the arm holds still until GO), so a 4-frame
horizon would call every cue write useless and close the gate. The target is the library's
(`ib_loss`: write iff it cuts the future loss by a relative `margin`), only the horizon differs.
Action losses are computed on actions divided by the speed limit (values in [-1, 1]); the
model itself outputs radians.
"""

import argparse
import copy
import json
import platform
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from aura_ros.memory import (
    AlwaysWrite,
    AuraMemLayer,
    DenseGRU,
    LearnedGate,
    MemoryConfig,
    action_loss,
    build_model,
    ib_loss,
    save_checkpoint,
    sparsity_loss,
)
from aura_ros.memory.training import gated_forward, offset_utility
from aura_ros.runtime import ImageSpec, ModelSpec, SmallCNN, load_model_dir, save_model_dir
from aura_ros.tasks.cue_reach import (
    ACTION_NAMES,
    JOINT_NAMES,
    N_LAMP_CLASSES,
    N_PADS,
    CueReach,
    CueReachConfig,
    Renderer,
    TaskResult,
    lamp_render_args,
)

MODEL_NAME = 'cue_reach'
BASELINES = ('always_write', 'gru', 'no_memory')
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.25, 0.25, 0.25)
CNN_SEED_OFFSET = 1_000
MEM_SEED_OFFSET = 2_000
VAL_SEED_OFFSET = 3_000
SELECT_SEED_BASE = 5_000_000   # closed-loop threshold selection; evaluation uses 7_000_000+


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the trained model; written into the model card."""

    seed: int = 0
    image_size: int = 64
    d_model: int = 128
    d_key: int = 32
    d_val: int = 32
    head_hidden: int = 256
    # demonstrations
    cnn_episodes: int = 16
    mem_episodes: int = 48
    val_episodes: int = 6
    frames: int = 1600
    noise_max: float = 0.02        # per-episode Gaussian joint noise sd drawn in [0, noise_max]
    wander_prob: float = 0.01      # chance per frame that a wrong-goal segment starts
    # backbone
    cnn_steps: int = 2000
    cnn_batch: int = 128
    cnn_lr: float = 2e-3
    # memory
    window: int = 256
    batch: int = 32
    warmup_iters: int = 500
    gate_iters: int = 500
    lr: float = 2e-3
    gru_hidden: int = 256          # AURA's state is 1056 floats; a GRU that wide costs 10x more
    threshold: float = 0.5
    threshold_jitter: tuple = (0.3, 0.7)   # gate phase: threshold drawn per update from this range
    select_thresholds: tuple = (0.5, 0.4, 0.3, 0.2)
    select_envs: int = 10
    select_tasks: int = 8          # per episode, per candidate threshold
    w_ib: float = 1.0
    w_sparse: float = 0.1
    margin: float = 0.2
    offsets: tuple = (1, 2, 4, 8, 16, 32, 48, 64, 96, 128)
    # long-episode phase (state carried across windows and episodes; `train_carried`)
    carry_iters: int = 300
    carry_lr: float = 5e-4
    carry_burnin: int = 12800      # frames (~115 tasks); each stream burns in over 0..this
    carry_reset: float = 0.02      # chance per update that a stream restarts with empty memory


QUICK = TrainConfig(cnn_episodes=4, mem_episodes=8, val_episodes=2, frames=800, cnn_steps=150,
                    window=192, batch=8, warmup_iters=20, gate_iters=20, select_envs=2,
                    select_tasks=1, select_thresholds=(0.5, 0.3), carry_iters=10,
                    carry_burnin=384)


def task_config(image_size: int) -> CueReachConfig:
    return CueReachConfig(width=image_size, height=image_size)


# -- demonstrations -------------------------------------------------------------------------------


def collect(task: CueReachConfig, seed: int, episodes: int, frames: int, noise_max: float,
            wander_prob: float) -> dict:
    """Perturbed expert rollouts: states, lamp classes, GO, clean expert labels, task onsets."""
    E, T, C = episodes, frames, task.chunk
    data = {'q': np.zeros((E, T, 2), np.float32), 'lamp': np.zeros((E, T), np.int64),
            'go': np.zeros((E, T), bool), 'onset': np.zeros((E, T), bool),
            'goal': np.zeros((E, T), np.int64), 'expert': np.zeros((E, T, C, 2), np.float32),
            'all_goals': np.zeros((E, T, N_PADS, C, 2), np.float32)}
    for e in range(E):
        env = CueReach(task, seed=seed * 100_000 + e)
        rng = np.random.default_rng([seed, e, 7])
        sigma = rng.uniform(0.0, noise_max)
        wander, wander_goal, drift = 0, 0, np.zeros(2)
        for t in range(T):
            data['q'][e, t] = env.joints()
            data['lamp'][e, t] = env.lamp_class
            data['go'][e, t] = env.go
            data['onset'][e, t] = env.task.step == 0
            data['goal'][e, t] = env.goal
            data['all_goals'][e, t] = env.expert_all_goals()
            data['expert'][e, t] = data['all_goals'][e, t, env.goal]
            action = data['expert'][e, t, 0].astype(np.float64)
            if wander == 0 and rng.random() < wander_prob:
                wander = int(rng.integers(5, 21))
                wander_goal = int(rng.choice([k for k in range(N_PADS) if k != env.goal]))
                drift = rng.uniform(-0.5, 0.5, 2) * task.max_step
            if wander > 0:
                wander -= 1
                action = env.expert_chunk(wander_goal)[0] if env.go else drift
            env.step(action + rng.normal(0.0, sigma, 2))
    return data


def render(renderer: Renderer, q: np.ndarray, lamp: np.ndarray, go: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3] images of N recorded states."""
    return np.stack([renderer.render(q[i], *lamp_render_args(int(lamp[i])), bool(go[i]))
                     for i in range(len(q))])


def to_input(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> normalised float [N, 3, H, W] (the model dir's ImageSpec)."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(IMAGE_MEAN)[:, None, None]
    std = torch.tensor(IMAGE_STD)[:, None, None]
    return (x - mean) / std


# -- backbone -------------------------------------------------------------------------------------


class Probes(nn.Module):
    """Linear read-outs of the layer-normed features: what the memory will need to see."""

    def __init__(self, d_model: int, chunk: int):
        super().__init__()
        self.norm = nn.LayerNorm(d_model, elementwise_affine=False)
        self.lamp = nn.Linear(d_model, N_LAMP_CLASSES)
        self.go = nn.Linear(d_model, 1)
        self.actions = nn.Linear(d_model, N_PADS * chunk * 2)

    def forward(self, z):
        x = self.norm(z)
        return self.lamp(x), self.go(x).squeeze(-1), self.actions(x)


def probe_losses(probes, z, lamp, go, all_goals, scale):
    lamp_logits, go_logit, actions = probes(z)
    losses = {'lamp': F.cross_entropy(lamp_logits, lamp),
              'go': F.binary_cross_entropy_with_logits(go_logit, go.float()),
              'actions': F.mse_loss(actions, all_goals.flatten(1) / scale)}
    metrics = {'lamp_acc': (lamp_logits.argmax(-1) == lamp).float().mean().item(),
               'go_acc': ((go_logit > 0) == go).float().mean().item()}
    lit = lamp > 0
    if lit.any():
        metrics['lit_lamp_acc'] = (lamp_logits[lit].argmax(-1) == lamp[lit]).float().mean().item()
    return losses, metrics


def train_backbone(cfg: TrainConfig, task: CueReachConfig, data: dict, val: dict,
                   log) -> tuple[SmallCNN, dict]:
    renderer = Renderer(task)
    torch.manual_seed(cfg.seed)
    cnn = SmallCNN(task.height, task.width, 2, cfg.d_model)
    probes = Probes(cfg.d_model, task.chunk)
    params = list(cnn.parameters()) + list(probes.parameters())
    opt = torch.optim.Adam(params, lr=cfg.cnn_lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.cnn_lr, total_steps=cfg.cnn_steps,
                                                pct_start=0.1)
    flat = {k: v.reshape(-1, *v.shape[2:]) for k, v in data.items()}
    lit = np.flatnonzero(flat['lamp'] > 0)
    rng = np.random.default_rng([cfg.seed, 11])
    n = len(flat['lamp'])

    def batch_of(source, idx):
        images = to_input(render(renderer, source['q'][idx], source['lamp'][idx],
                                 source['go'][idx]))
        return (images, torch.from_numpy(source['q'][idx]), torch.from_numpy(source['lamp'][idx]),
                torch.from_numpy(source['go'][idx]), torch.from_numpy(source['all_goals'][idx]))

    bar = tqdm(range(cfg.cnn_steps), desc='backbone', unit='step', dynamic_ncols=True)
    for _ in bar:
        half = cfg.cnn_batch // 2
        idx = np.concatenate([rng.choice(lit, half), rng.integers(0, n, cfg.cnn_batch - half)])
        images, q, lamp, go, all_goals = batch_of(flat, idx)
        losses, metrics = probe_losses(probes, cnn(images, q), lamp, go, all_goals,
                                       task.max_step)
        loss = losses['lamp'] + losses['go'] + 4.0 * losses['actions']
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        bar.set_postfix(loss=f'{loss.item():.3f}', lamp=f'{metrics["lamp_acc"]:.2f}')
    cnn.eval()
    # held-out probe metrics: all frames of the validation episodes
    vflat = {k: v.reshape(-1, *v.shape[2:]) for k, v in val.items()}
    vidx = np.arange(len(vflat['lamp']))
    metrics_sum, count = {}, 0
    with torch.no_grad():
        for chunk in np.array_split(vidx, max(1, len(vidx) // 512)):
            images, q, lamp, go, all_goals = batch_of(vflat, chunk)
            losses, metrics = probe_losses(probes, cnn(images, q), lamp, go, all_goals,
                                           task.max_step)
            metrics['actions_mse'] = losses['actions'].item()
            for k, v in metrics.items():
                metrics_sum[k] = metrics_sum.get(k, 0.0) + v * len(chunk)
            count += len(chunk)
        lit_v = vidx[vflat['lamp'] > 0]
        images, q, lamp, go, all_goals = batch_of(vflat, lit_v)
        _, metrics = probe_losses(probes, cnn(images, q), lamp, go, all_goals, task.max_step)
    result = {k: v / count for k, v in metrics_sum.items() if k != 'lit_lamp_acc'}
    result['lit_lamp_acc'] = metrics['lit_lamp_acc']
    log('backbone held-out probes: ' + ', '.join(f'{k} {v:.4f}' for k, v in result.items()))
    return cnn, result


@torch.no_grad()
def features(cnn: SmallCNN, task: CueReachConfig, data: dict, batch: int = 512) -> torch.Tensor:
    """Frozen-backbone features [E, T, d_model] of recorded episodes."""
    renderer = Renderer(task)
    E, T = data['lamp'].shape
    flat = {k: data[k].reshape(-1, *data[k].shape[2:]) for k in ('q', 'lamp', 'go')}
    out = []
    for idx in tqdm(np.array_split(np.arange(E * T), max(1, E * T // batch)), desc='features',
                    unit='batch', dynamic_ncols=True, leave=False):
        images = to_input(render(renderer, flat['q'][idx], flat['lamp'][idx], flat['go'][idx]))
        out.append(cnn(images, torch.from_numpy(flat['q'][idx])))
    return torch.cat(out).reshape(E, T, -1)


# -- memory ---------------------------------------------------------------------------------------


class Windows:
    """Training windows of `window` frames that start at a task onset, sampled with a seed."""

    def __init__(self, z: torch.Tensor, data: dict, window: int, seed: int):
        self.z, self.window = z, window
        self.target = torch.from_numpy(data['expert'])
        starts = [(e, t) for e, t in zip(*np.nonzero(data['onset']), strict=True)
                  if t + window <= data['onset'].shape[1]]
        self.starts = np.array(starts)
        self.rng = np.random.default_rng(seed)

    def sample(self, batch: int):
        pick = self.starts[self.rng.integers(0, len(self.starts), batch)]
        return self.get(pick)

    def get(self, pick):
        idx = torch.from_numpy(pick[:, 1])[:, None] + torch.arange(self.window)[None]
        rows = torch.from_numpy(pick[:, 0])[:, None]
        return self.z[rows, idx], self.target[rows, idx]

    def fixed(self, count: int, seed: int):
        rng = np.random.default_rng(seed)
        return self.get(self.starts[rng.choice(len(self.starts), min(count, len(self.starts)),
                                               replace=False)])


def update(model: nn.Module, opt, sched, loss: torch.Tensor) -> None:
    """One clipped optimiser step and its learning-rate schedule step."""
    opt.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()


def objective(model: nn.Module, out: dict, target: torch.Tensor, cfg: TrainConfig, scale: float,
              gated: bool) -> tuple[torch.Tensor, dict]:
    """The training loss of one update and its logged terms: the action loss alone, or with the
    gate's information-bottleneck (scored at `cfg.offsets`) and sparsity terms."""
    act = action_loss(out['action'] / scale, target / scale).mean()
    if not gated:
        return act, {'action': act.item()}
    # IB target: utility > margin * skip loss, invariant to the action scale
    utility, skip = offset_utility(model, out, target, cfg.offsets)
    ib = ib_loss(out['p'], utility, skip, cfg.margin)
    sparse = sparsity_loss(out['p'])
    loss = act + cfg.w_ib * ib + cfg.w_sparse * sparse
    return loss, {'action': act.item(), 'ib': ib.item(), 'sparse': sparse.item(),
                  'write_rate': out['g'].mean().item()}


def train_memory(model: nn.Module, windows: Windows, cfg: TrainConfig, iters: int, desc: str,
                 scale: float, gated: bool = False, rng_seed: int = 0) -> list[dict]:
    """`iters` Adam updates of `model` on windows; AURA's gate phase when `gated`."""
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iters, eta_min=cfg.lr * 0.1)
    windows.rng = np.random.default_rng(rng_seed)
    history: list[dict] = []
    bar = tqdm(range(iters), desc=desc, unit='it', dynamic_ncols=True)
    jitter = np.random.default_rng(rng_seed + 1)
    for _ in bar:
        z, target = windows.sample(cfg.batch)
        if gated:
            # A threshold drawn per update: the head learns to act from memories written by a
            # more or less eager gate, so the deployed threshold can be chosen afterwards.
            model.gate_policy = LearnedGate(float(jitter.uniform(*cfg.threshold_jitter)))
            out = gated_forward(model, z)
        else:
            out = model(z)
        loss, rec = objective(model, out, target, cfg, scale, gated)
        update(model, opt, sched, loss)
        history.append(rec)
        bar.set_postfix({k: f'{v:.4f}' for k, v in rec.items()})
    return history


class Streams:
    """`batch` endless streams through the memory episodes for training with a carried state.

    Each stream starts at a random task onset and runs on through its episode; at the end of an
    episode it continues at frame 0 of another random episode (a new task starts there), so one
    stream is one long never-reset run of chained tasks. `restart(i)` jumps stream i to a random
    task onset (the caller also empties its memory).
    """

    def __init__(self, z: torch.Tensor, target: torch.Tensor, onset: np.ndarray, batch: int,
                 window: int, seed: int):
        self.z, self.target, self.window = z, target, window
        self.episodes, self.frames = z.shape[:2]
        self.onsets = np.argwhere(onset)
        self.rng = np.random.default_rng(seed)
        self.ep = np.zeros(batch, np.int64)
        self.pos = np.zeros(batch, np.int64)
        for i in range(batch):
            self.restart(i)

    def restart(self, i: int) -> None:
        self.ep[i], self.pos[i] = self.onsets[self.rng.integers(len(self.onsets))]

    def next(self):
        """The next `window` frames of every stream: features [B, window, d], targets."""
        zs, ts = [], []
        for i in range(len(self.ep)):
            z_parts, t_parts, need = [], [], self.window
            while need > 0:
                take = min(need, self.frames - int(self.pos[i]))
                z_parts.append(self.z[self.ep[i], self.pos[i]:self.pos[i] + take])
                t_parts.append(self.target[self.ep[i], self.pos[i]:self.pos[i] + take])
                self.pos[i] += take
                need -= take
                if self.pos[i] == self.frames:
                    others = [e for e in range(self.episodes) if e != self.ep[i]] or [self.ep[i]]
                    self.ep[i], self.pos[i] = others[self.rng.integers(len(others))], 0
            zs.append(torch.cat(z_parts))
            ts.append(torch.cat(t_parts))
        return torch.stack(zs), torch.stack(ts)


def reset_rows(state: dict, rows: np.ndarray) -> dict:
    """The state with the memory of the selected rows emptied (zero, as `init_state`)."""
    if not rows.any():
        return state
    mask = torch.from_numpy(rows)
    return {k: torch.where(mask.view(-1, *[1] * (v.dim() - 1)), torch.zeros_like(v), v)
            for k, v in state.items()}


def train_carried(model: nn.Module, streams: Streams, cfg: TrainConfig, iters: int, desc: str,
                  scale: float, gated: bool = False, rng_seed: int = 0) -> list[dict]:
    """Long-episode phase: truncated BPTT over consecutive windows with the state carried.

    The memory state (detached) goes on from one window of a stream to the next, so the model
    learns to act and gate with W and b already full of many old tasks, as on the robot where
    the episode never resets. Before the updates every stream is burned in (no gradient) over a
    random number of windows, up to `carry_burnin` frames, so the batch mixes depths; during the
    updates a stream restarts from an empty memory with probability `carry_reset` per update.
    Same losses as `train_memory` (AURA: action + IB + sparsity, threshold jitter).
    """
    rng = np.random.default_rng(rng_seed)
    B, window = len(streams.ep), streams.window
    state = model.init_state(B)
    policy = model.gate_policy if gated else None

    def forward(z, state, threshold=None):
        if gated:
            model.gate_policy = LearnedGate(threshold)
            return gated_forward(model, z, state)
        return model(z, state=state)

    burn = rng.integers(0, cfg.carry_burnin // window + 1, B)
    with torch.no_grad():
        for j in range(int(burn.max())):
            fresh = (burn.max() - j) == burn
            for i in np.flatnonzero(fresh):
                streams.restart(i)
            state = reset_rows(state, fresh)
            z, _ = streams.next()
            state = forward(z, state, cfg.threshold)['state']
    fresh = burn == 0
    for i in np.flatnonzero(fresh):
        streams.restart(i)
    state = reset_rows(state, fresh)

    opt = torch.optim.Adam(model.parameters(), lr=cfg.carry_lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iters, eta_min=cfg.carry_lr * 0.1)
    history: list[dict] = []
    bar = tqdm(range(iters), desc=desc, unit='it', dynamic_ncols=True)
    for _ in bar:
        z, target = streams.next()
        if gated:
            out = forward(z, state, float(rng.uniform(*cfg.threshold_jitter)))
        else:
            out = forward(z, state)
        loss, rec = objective(model, out, target, cfg, scale, gated)
        update(model, opt, sched, loss)
        state = {k: v.detach() for k, v in out['state'].items()}
        restart = rng.random(B) < cfg.carry_reset
        for i in np.flatnonzero(restart):
            streams.restart(i)
        state = reset_rows(state, restart)
        history.append(rec)
        bar.set_postfix({k: f'{v:.4f}' for k, v in rec.items()})
    if gated:
        model.gate_policy = policy
    return history


@torch.no_grad()
def validate(model: nn.Module, z: torch.Tensor, target: torch.Tensor, scale: float) -> dict:
    """Open-loop held-out action loss (scaled) and write rate of one model."""
    out = model(z)
    return {'action_loss': action_loss(out['action'] / scale, target / scale).mean().item(),
            'write_rate': out['g'].float().mean().item()}


@torch.no_grad()
def rollout(model, backbone, task: CueReachConfig, seeds: list[int],
            tasks_per_env: int, record_env: int = -1, desc: str = ''):
    """Closed-loop run of one method on len(seeds) long episodes in a batch.

    `backbone(images uint8 [B,H,W,3], joints [B,2]) -> features [B, d_model]`. Each frame the
    first point of every predicted chunk is executed. Returns (task results, [writes, frames] by
    lamp state, recorded frames of env `record_env`).
    """
    envs = [CueReach(task, seed=s) for s in seeds]
    state = model.init_state(len(envs))
    writes = np.zeros(len(envs), np.int64)
    lamp_writes = {'cue': [0, 0], 'distractor': [0, 0], 'dark': [0, 0]}
    results: list[list[TaskResult]] = [[] for _ in envs]
    record = []
    frame = 0
    bar = tqdm(total=tasks_per_env * len(envs), desc=desc, unit='task', dynamic_ncols=True,
               leave=False)
    while min(len(r) for r in results) < tasks_per_env:
        images = np.stack([e.image() for e in envs])
        joints = np.stack([e.joints() for e in envs])
        out = model.step(backbone(images, joints), state, frame)
        state = out['state']
        g = out['g'].numpy().astype(np.int64)
        action = out['action'][:, 0].numpy()
        for i, env in enumerate(envs):
            lamp = env.lamp
            if len(results[i]) < tasks_per_env:
                lamp_writes[lamp][0] += int(g[i])
                lamp_writes[lamp][1] += 1
            if i == record_env:
                record.append({'image': images[i], 'task': env.task.index, 'goal': env.goal,
                               'lamp': lamp, 'go': env.go, 'p': float(out['p'][i]),
                               'g': int(g[i])})
            writes[i] += g[i]
            result = env.step(action[i])
            if result is not None:
                result.writes = int(writes[i])
                writes[i] = 0
                if len(results[i]) < tasks_per_env:
                    results[i].append(result)
                    bar.update(1)
        frame += 1
    bar.close()
    return [r for env_results in results for r in env_results], lamp_writes, record



def select_threshold(aura: AuraMemLayer, cnn: SmallCNN, task: CueReachConfig, cfg: TrainConfig,
                     log) -> tuple[float, dict]:
    """Closed-loop success and writes per task of each candidate threshold on held-out seeds.

    Picks the highest success; among equal successes the highest threshold (fewest writes).
    Runs on the torch backbone and on seeds the evaluation never uses.
    """
    def backbone(images, joints):
        return cnn(to_input(images), torch.from_numpy(joints))

    seeds = [SELECT_SEED_BASE + cfg.seed * 1000 + i for i in range(cfg.select_envs)]
    scores = {}
    for threshold in cfg.select_thresholds:
        aura.gate_policy = LearnedGate(threshold)
        results, _, _ = rollout(aura, backbone, task, seeds, cfg.select_tasks,
                                desc=f'threshold {threshold}')
        scores[threshold] = {'success': float(np.mean([r.success for r in results])),
                             'writes_per_task': float(np.mean([r.writes for r in results])),
                             'tasks': len(results)}
        log(f'closed-loop selection, threshold {threshold}: success '
            f'{scores[threshold]["success"]:.3f}, writes/task '
            f'{scores[threshold]["writes_per_task"]:.2f}')
    best = max(scores, key=lambda th: (scores[th]['success'], th))
    return best, scores


# -- the whole pipeline ---------------------------------------------------------------------------


def memory_config(cfg: TrainConfig, task: CueReachConfig,
                  threshold: Optional[float] = None) -> MemoryConfig:
    return MemoryConfig(d_model=cfg.d_model, d_key=cfg.d_key, d_val=cfg.d_val,
                        d_action=len(ACTION_NAMES), chunk=task.chunk,
                        head_hidden=cfg.head_hidden,
                        gate_threshold=cfg.threshold if threshold is None else threshold)


def model_spec(cfg: TrainConfig, task: CueReachConfig, threshold: float) -> ModelSpec:
    return ModelSpec(name=MODEL_NAME,
                     cameras=ImageSpec(width=task.width, height=task.height, mean=IMAGE_MEAN,
                                       std=IMAGE_STD),
                     joint_names=JOINT_NAMES, action_names=ACTION_NAMES,
                     action_period_s=task.action_period_s,
                     memory=memory_config(cfg, task, threshold), action_mode='delta')


def build_baseline(method: str, config: MemoryConfig, gru_hidden: Optional[int]) -> nn.Module:
    """A baseline of `build_model`, except the GRU's width (see `TrainConfig.gru_hidden`)."""
    if method == 'gru':
        return DenseGRU(config, hidden=gru_hidden)
    return build_model(method, config)


def half_precision_copy(model: nn.Module) -> nn.Module:
    """fp16 copy for a small baseline file; loading casts back to fp32."""
    return copy.deepcopy(model).half()


CARD = """# cue_reach: the bundled default model of aura_ros

A frozen `SmallCNN` backbone (`backbone.onnx`: 64x64 RGB + 2 joint angles -> 128 features) and an
AURA memory + action head (`memory.safetensors`, d_key = d_val = 32, state {state_bytes} bytes)
trained on the cue-reach task (`aura_ros/tasks/cue_reach.py`): a planar two-link arm seen from
above, 8 look-alike pads, a cue lamp (top-left) whose FILLED disk colour names the goal pad for
{cue_frames} frames, distractor RINGS in the same lamp, a GO light (top-right) after a random delay
of {delay_min}-{delay_max} frames, one long episode of chained tasks.

- Joints (in order): `shoulder`, `elbow` (rad). Actions: a chunk of {chunk} joint position
  DELTAS (rad per action period of {period:.4f} s, clip +-{max_step} rad), `shoulder`, `elbow`.
  Execute the first point each frame (or the next points while no new chunk arrives).
- Image: RGB, resized to {size}x{size}, (pixel/255 - 0.5) / 0.25.
- Gate threshold {threshold} (chosen in closed loop on held-out seeds, below).

## How it was made

    {command}

Wall time {wall:.0f} s on {machine} (torch {torch}, {threads} thread). Seed {seed}.
Training config: `{config}`

Data: perturbed expert rollouts (Gaussian noise on executed joint deltas, sd up to {noise_max}
rad; wrong-goal "wander" segments of 5-20 frames started with probability {wander_prob} per frame;
labels always the clean expert chunk for the true goal from the reached state).
{cnn_frames} frames for the backbone, {mem_frames} frames for the memory, {val_frames} held out.

Backbone: trained with linear probes on its layer-normed features (17-way lamp class, GO, the
expert chunk for each of the 8 goals), then frozen. Held-out probes: {probe}.

Memory: {warmup} warm-up updates with always-write (action loss only), then {gate} updates with the
learned gate and action + {w_ib} x IB (future offsets {offsets}, margin {margin}) +
{w_sparse} x mean write probability. {carry}
Baselines on the same frozen features, same windows:
always-write (the warm-up + {gate} more updates), GRU (hidden {gru_hidden}; AURA's state is
{state_floats} floats, a GRU that wide costs 10x more per update on a CPU) and no memory
({total} updates each from scratch); in `baselines/` (fp16 safetensors).

Open-loop held-out (scaled action MSE, write rate at threshold {train_threshold}):
{val_table}

Gate threshold selection (closed loop, torch backbone, {select_tasks} tasks on seeds the
evaluation never uses; the highest success wins, ties go to the higher threshold):
{select_table}

## Closed-loop evaluation

See `docs/results/cue_reach.md` (`python -m aura_ros eval cue-reach`).
"""


def carry_text(cfg: TrainConfig, iters: int) -> str:
    """The model card's sentence on the long-episode phase."""
    if iters <= 0:
        return 'No long-episode phase.'
    return (f'Then a long-episode phase for AURA and always-write alike ({iters} updates each, '
            f'lr {cfg.carry_lr} cosine to a tenth, same losses): truncated BPTT over consecutive '
            f'{cfg.window}-frame windows of never-reset streams of chained episodes, the memory '
            f'state carried (detached) from window to window, streams burned in over 0-'
            f'{cfg.carry_burnin} frames first and restarted empty with probability '
            f'{cfg.carry_reset} per update, so the head and gate learn to work with W and b '
            'full of many old tasks (`train_carried`).')


CARRY_SECTION = '## Long-episode fine-tune'


def finetune_carried(cfg: TrainConfig, model_dir: Path, command: str, log=print) -> dict:
    """Only the long-episode phase, from the checkpoints already in `model_dir`, in place.

    The backbone (`backbone.onnx`) is not touched: the memory-training episodes are collected
    again (same seeds as `run`) and their features computed with that ONNX backbone. AURA
    (`memory.safetensors`) and always-write (`baselines/always_write.safetensors`) get
    `cfg.carry_iters` updates of `train_carried` each; the GRU and no-memory baselines are
    left as they are. The gate threshold stays the saved one.
    """
    from aura_ros.runtime.model_dir import MEMORY_FILE
    from aura_ros.training.cue_reach_eval import Backbone, load_methods

    summary_path = model_dir / 'training.json'
    if summary_path.is_file() and 'carry_finetune' in json.loads(summary_path.read_text()):
        raise SystemExit(f'{model_dir} already had the long-episode fine-tune (training.json '
                         '"carry_finetune"); start again from a model without it')
    torch.set_num_threads(1)
    start = time.time()
    spec = load_model_dir(model_dir)
    task = task_config(cfg.image_size)
    scale = task.max_step
    backbone = Backbone(model_dir, spec)
    models = load_methods(model_dir, spec)
    renderer = Renderer(task)

    def onnx_features(data: dict) -> torch.Tensor:
        E, T = data['lamp'].shape
        flat = {k: data[k].reshape(-1, *data[k].shape[2:]) for k in ('q', 'lamp', 'go')}
        out = [backbone(render(renderer, flat['q'][idx], flat['lamp'][idx], flat['go'][idx]),
                        flat['q'][idx])
               for idx in np.array_split(np.arange(E * T), max(1, E * T // 512))]
        return torch.cat(out).reshape(E, T, -1)

    args = (cfg.frames, cfg.noise_max, cfg.wander_prob)
    log(f'collecting {cfg.mem_episodes}+{cfg.val_episodes} episodes, ONNX backbone features')
    mem_data = collect(task, cfg.seed + MEM_SEED_OFFSET, cfg.mem_episodes, *args)
    val_data = collect(task, cfg.seed + VAL_SEED_OFFSET, cfg.val_episodes, *args)
    z_mem, z_val = onnx_features(mem_data), onnx_features(val_data)
    val_z, val_target = Windows(z_val, val_data, cfg.window, cfg.seed).fixed(64, cfg.seed + 5)
    target = torch.from_numpy(mem_data['expert'])
    before = {m: validate(models[m].eval(), val_z, val_target, scale)
              for m in ('aura', 'always_write')}
    hist = {}
    for method, gated in (('aura', True), ('always_write', False)):
        streams = Streams(z_mem, target, mem_data['onset'], cfg.batch, cfg.window,
                          cfg.seed * 10 + 3)
        hist[method] = train_carried(models[method].train(), streams, cfg, cfg.carry_iters,
                                     f'{method} carried', scale, gated=gated,
                                     rng_seed=cfg.seed * 10 + 4)
        models[method].eval()
    after = {m: validate(models[m], val_z, val_target, scale) for m in ('aura', 'always_write')}
    for m in after:
        log(f'held-out {m}: action loss {before[m]["action_loss"]:.4f} -> '
            f'{after[m]["action_loss"]:.4f}, write rate {before[m]["write_rate"]:.3f} -> '
            f'{after[m]["write_rate"]:.3f}')
    save_checkpoint(models['aura'], model_dir / MEMORY_FILE, metadata={'model': spec.name})
    save_checkpoint(half_precision_copy(models['always_write']),
                    model_dir / 'baselines' / 'always_write.safetensors',
                    metadata={'model': MODEL_NAME, 'dtype': 'float16'})
    for path in model_dir.rglob('*.safetensors'):
        path.chmod(0o644)
    wall = time.time() - start
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    summary['carry_finetune'] = {
        'command': command, 'wall_s': wall, 'iters': cfg.carry_iters, 'lr': cfg.carry_lr,
        'burnin': cfg.carry_burnin, 'reset': cfg.carry_reset,
        'features': 'backbone.onnx (ONNX Runtime)', 'validation_before': before,
        'validation_after': after, 'final_train': {m: h[-1] for m, h in hist.items()}}
    summary_path.write_text(json.dumps(summary, indent=2) + '\n')
    card = model_dir / 'MODEL_CARD.md'
    if card.is_file():
        text = card.read_text()
        eval_head = '## Closed-loop evaluation'
        section = '\n'.join([
            CARRY_SECTION, '',
            'AURA and the always-write baseline were then fine-tuned for long never-reset '
            'episodes from the checkpoints above, the backbone unchanged:', '',
            f'    {command}', '',
            f'Wall time {wall:.0f} s (torch {torch.__version__}, 1 thread). '
            + carry_text(cfg, cfg.carry_iters).replace('Then a', 'A', 1)
            + ' Features from `backbone.onnx`. GRU and no memory unchanged.', '',
            'Open-loop held-out (scaled action MSE, write rate; fresh 256-frame windows), '
            'before -> after:',
            *[f'- {m}: {before[m]["action_loss"]:.4f} -> {after[m]["action_loss"]:.4f}, '
              f'{before[m]["write_rate"]:.3f} -> {after[m]["write_rate"]:.3f}' for m in after],
            '', ''])
        if CARRY_SECTION in text:
            text = text.split(CARRY_SECTION)[0] + eval_head + text.split(eval_head, 1)[1]
        if eval_head in text:
            head, tail = text.split(eval_head, 1)
            text = head + section + eval_head + tail
        else:
            text = text.rstrip('\n') + '\n\n' + section
        card.write_text(text)
    log(f'updated {model_dir} in {wall:.0f} s')
    return summary


def run(cfg: TrainConfig, out: Path, command: str, log=print) -> dict:
    torch.set_num_threads(1)
    start = time.time()
    task = task_config(cfg.image_size)
    scale = task.max_step
    log(f'collecting demonstrations ({cfg.cnn_episodes}+{cfg.mem_episodes}+{cfg.val_episodes} '
        f'episodes x {cfg.frames} frames)')
    args = (cfg.frames, cfg.noise_max, cfg.wander_prob)
    cnn_data = collect(task, cfg.seed + CNN_SEED_OFFSET, cfg.cnn_episodes, *args)
    mem_data = collect(task, cfg.seed + MEM_SEED_OFFSET, cfg.mem_episodes, *args)
    val_data = collect(task, cfg.seed + VAL_SEED_OFFSET, cfg.val_episodes, *args)
    cnn, probe = train_backbone(cfg, task, cnn_data, val_data, log)
    for p in cnn.parameters():
        p.requires_grad_(False)
    z_mem = features(cnn, task, mem_data)
    z_val = features(cnn, task, val_data)
    windows = Windows(z_mem, mem_data, cfg.window, cfg.seed)
    val_z, val_target = Windows(z_val, val_data, cfg.window, cfg.seed).fixed(64, cfg.seed + 5)

    config = memory_config(cfg, task)
    torch.manual_seed(cfg.seed)
    warm = AuraMemLayer(config, AlwaysWrite())
    hist = {'warmup': train_memory(warm, windows, cfg, cfg.warmup_iters, 'warm-up', scale,
                                   rng_seed=cfg.seed * 10 + 1)}
    aura = copy.deepcopy(warm)
    aura.gate_policy = LearnedGate(cfg.threshold)
    hist['aura'] = train_memory(aura, windows, cfg, cfg.gate_iters, 'aura gate', scale,
                                gated=True, rng_seed=cfg.seed * 10 + 2)
    models = {'aura': aura}
    always = build_model('always_write', config)
    always.load_state_dict(warm.state_dict())
    hist['always_write'] = train_memory(always, windows, cfg, cfg.gate_iters, 'always-write',
                                        scale, rng_seed=cfg.seed * 10 + 2)
    models['always_write'] = always
    if cfg.carry_iters > 0:
        target = torch.from_numpy(mem_data['expert'])
        for method, gated in (('aura', True), ('always_write', False)):
            streams = Streams(z_mem, target, mem_data['onset'], cfg.batch, cfg.window,
                              cfg.seed * 10 + 3)
            hist[f'{method}_carried'] = train_carried(
                models[method], streams, cfg, cfg.carry_iters, f'{method} carried', scale,
                gated=gated, rng_seed=cfg.seed * 10 + 4)
    for method in ('gru', 'no_memory'):
        torch.manual_seed(cfg.seed)
        model = build_baseline(method, config, cfg.gru_hidden)
        hist[method] = train_memory(model, windows, cfg, cfg.warmup_iters + cfg.gate_iters,
                                    method, scale, rng_seed=cfg.seed * 10 + 1)
        models[method] = model
    aura.gate_policy = LearnedGate(cfg.threshold)
    val = {m: validate(model.eval(), val_z, val_target, scale) for m, model in models.items()}
    for m, v in val.items():
        log(f'held-out {m}: action loss {v["action_loss"]:.4f}, write rate {v["write_rate"]:.3f}')
    threshold, selection = select_threshold(aura, cnn, task, cfg, log)
    aura.gate_policy = LearnedGate(threshold)
    aura.config = aura.config.replace(gate_threshold=threshold)

    wall = time.time() - start
    spec = model_spec(cfg, task, threshold)
    n = cfg.frames
    card = CARD.format(
        state_bytes=config.memory_bytes(1), cue_frames=task.cue_frames,
        delay_min=task.delay_min, delay_max=task.delay_max, chunk=task.chunk,
        period=task.action_period_s, max_step=task.max_step, size=cfg.image_size,
        threshold=threshold, train_threshold=cfg.threshold, command=command, wall=wall,
        machine=f'{platform.machine()} CPU', torch=torch.__version__,
        threads=torch.get_num_threads(), seed=cfg.seed, config=json.dumps(asdict(cfg)),
        noise_max=cfg.noise_max, wander_prob=cfg.wander_prob, cnn_frames=cfg.cnn_episodes * n,
        mem_frames=cfg.mem_episodes * n, val_frames=cfg.val_episodes * n,
        probe=', '.join(f'{k} {v:.3f}' for k, v in probe.items()), warmup=cfg.warmup_iters,
        gate=cfg.gate_iters, w_ib=cfg.w_ib, offsets=list(cfg.offsets), margin=cfg.margin,
        w_sparse=cfg.w_sparse, carry=carry_text(cfg, cfg.carry_iters),
        gru_hidden=cfg.gru_hidden, state_floats=config.state_floats,
        total=cfg.warmup_iters + cfg.gate_iters,
        val_table='\n'.join(f'- {m}: {v["action_loss"]:.4f}, {v["write_rate"]:.3f}'
                            for m, v in val.items()),
        select_tasks=cfg.select_envs * cfg.select_tasks,
        select_table='\n'.join(f'- threshold {th}: success {v["success"]:.3f}, writes per task '
                               f'{v["writes_per_task"]:.2f}' for th, v in selection.items()))
    save_model_dir(out, spec, cnn, aura, card=card)
    (out / 'baselines').mkdir(exist_ok=True)
    for m in BASELINES:
        meta = {'model': MODEL_NAME, 'dtype': 'float16'}
        if m == 'gru':
            meta['hidden'] = cfg.gru_hidden
        save_checkpoint(half_precision_copy(models[m]), out / 'baselines' / f'{m}.safetensors',
                        metadata=meta)
    for path in out.rglob('*'):   # safetensors writes 0600; an installed model must be readable
        if path.is_file():
            path.chmod(0o644)
    summary = {'wall_s': wall, 'probe': probe, 'validation': val, 'config': asdict(cfg),
               'threshold': threshold, 'threshold_selection': selection,
               'final_train': {m: h[-1] for m, h in hist.items()}}
    (out / 'training.json').write_text(json.dumps(summary, indent=2) + '\n')
    log(f'wrote {out} in {wall:.0f} s')
    return summary


def main(args: argparse.Namespace) -> int:
    cfg = replace(QUICK if args.quick else TrainConfig(), seed=args.seed)
    command = 'python -m aura_ros train cue-reach ' + ' '.join(sys.argv[3:]) \
        if sys.argv[1:3] == ['train', 'cue-reach'] else \
        f'python -m aura_ros train cue-reach --out {args.out} --seed {args.seed}' \
        + (' --quick' if args.quick else '')
    if getattr(args, 'carry_only', False):
        cfg = replace(cfg, carry_iters=args.carry_iters or cfg.carry_iters)
        finetune_carried(cfg, Path(args.out), command.strip())
        return 0
    if getattr(args, 'carry_iters', None) is not None:
        cfg = replace(cfg, carry_iters=args.carry_iters)
    run(cfg, Path(args.out), command.strip())
    return 0
