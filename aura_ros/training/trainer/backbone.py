"""Stage 2: the camera backbone, trained on the data as an autoencoder plus an action read-out.

The reconstruction loss weights pixels by how far they are from the dataset's mean image, and
frames that hold such rare pixels (or the hinted frames) are over-sampled: the action loss alone
would keep only what the current frame's action needs and drop a cue seen long before it
matters, which the memory needs in the features.
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from aura_ros.progress import Progress
from aura_ros.runtime.cnn import CameraBackbone
from aura_ros.runtime.model_dir import IMAGE_MEAN, IMAGE_STD
from aura_ros.runtime.preprocess import normalise
from aura_ros.training import distributed

from .config import TrainerConfig


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
    """uint8 [N, H, W, 3] -> normalised float [N, 3, H, W]: the runtime's own normalisation."""
    return torch.from_numpy(normalise(images, mean, std))


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


def mean_and_spread(thumbs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every thumbnail pixel's mean over the sample and its spread (floored, so a pixel that
    never changes does not divide by zero)."""
    return thumbs.mean(0), thumbs.std(0) + 0.05


def pixel_rarity(thumbs: torch.Tensor) -> np.ndarray:
    """Per frame: the largest distance of a thumbnail pixel from its mean over the sample, in
    its spreads. A lamp where the image is always dark scores high, and so does an arm pushed
    where it is seldom seen."""
    mean_img, std_img = mean_and_spread(thumbs)
    return ((thumbs - mean_img).abs() / std_img).flatten(1).amax(1).numpy()


def colour_rarity(thumbs: torch.Tensor, levels: int = 8, pixels: int = 50) -> np.ndarray:
    """Per frame: how seldom the sample shows the colours of its `pixels` rarest-coloured
    pixels (mean -log frequency, colours quantised to levels^3 bins). An arm in an unusual pose
    shows its usual colours; a lamp or an object of a colour seldom seen scores high."""
    mean = torch.tensor(IMAGE_MEAN).view(1, 1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(1, 1, 3, 1, 1)
    q = ((thumbs * std + mean).clamp(0, 1) * (levels - 1e-3)).long()
    bins = (q[:, :, 0] * levels * levels + q[:, :, 1] * levels + q[:, :, 2]).flatten(1)
    freq = torch.bincount(bins.flatten(), minlength=levels ** 3).double() / bins.numel()
    surprisal = -torch.log(freq[bins])
    return surprisal.topk(min(pixels, surprisal.shape[1]), 1).values.mean(1).numpy()


RARITY = {'pixel': pixel_rarity, 'colour': colour_rarity}


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
    # frame is (`rarity`: its pixels, or its colours): frames that show something seldom seen (a
    # cue lamp) are over-sampled.
    # Hinted frames, where the data has them, are the over-sampled ones instead: when much else
    # is rare too (an arm pushed around, DART), rarity alone loses the few frames that matter.
    sample = rng.choice(n, min(n, 2048), replace=False)
    thumbs = []
    for chunk in np.array_split(sample, max(1, len(sample) // 256)):
        thumbs.append(thumbnails(frames.batch(chunk)[0], cfg.recon_size))
    thumbs = torch.cat(thumbs)
    mean_img, std_img = mean_and_spread(thumbs)
    rarity = RARITY[cfg.rarity](thumbs)
    rare = sample[rarity >= np.quantile(rarity, 0.9)]
    hinted = frames.hinted()
    rare_text = f'the rarest tenth of frames ({cfg.rarity} rarity)'
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
