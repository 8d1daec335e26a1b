"""Stage 3: the frozen backbone's features of every frame, computed once."""

import numpy as np
import torch

from aura_ros.progress import Progress
from aura_ros.training import distributed

from .backbone import to_input


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
