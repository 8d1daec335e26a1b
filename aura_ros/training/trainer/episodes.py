"""Stage 1: which episodes train and which are held out, and the normalised targets of each."""

from dataclasses import dataclass

import numpy as np

from aura_ros.runtime.actions import encode_targets

from .config import TrainerConfig, TrainerError


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
    targets = np.concatenate([encode_targets(e.actions, e.joints, joint_index, mode)
                              .reshape(-1, len(demos.action_names)) for e in train_eps])
    stats['actions'] = {'mean': targets.mean(0).tolist(),
                        'std': np.maximum(targets.std(0), 1e-3).tolist()}
    return joint_index, stats


@dataclass
class Episodes:
    """The split, the statistics the model normalises with, and each episode's targets."""

    split: Split
    stats: dict                 # {'joints': {mean, std}, 'actions': {mean, std}}
    joint_index: np.ndarray     # the joint of every action (delta mode)
    action_mode: str

    def targets(self, episode) -> np.ndarray:
        """[T, chunk, n_actions] normalised targets of an episode (what the head learns)."""
        t = encode_targets(episode.actions, episode.joints, self.joint_index, self.action_mode)
        mean = np.asarray(self.stats['actions']['mean'], np.float32)
        std = np.asarray(self.stats['actions']['std'], np.float32)
        return ((t - mean) / std).astype(np.float32)


def prepare(demos, cfg: TrainerConfig) -> Episodes:
    """Split the demonstrations and take the statistics of the training side."""
    split = split_episodes(demos, cfg)
    joint_index, stats = action_setup(demos, cfg.action_mode, split.train)
    return Episodes(split, stats, joint_index, cfg.action_mode)
