"""Synthetic event-recall streams: the AURA paper's controlled benchmark (docs/design.md sec. 4).

Every episode is a stream of feature vectors z_t. Three kinds of steps:

- real events: "object o now has class c" (8 classes, chance 0.125). They must be remembered.
- distractors: built exactly like events (an object, a class) but with a marker that only
  resembles the event marker (cosine `distractor_similarity`); they must not change the action.
- filler: noise only.

With `n_objects == 1` (the easy task) the target at every step is the class of the latest real
event. With `n_objects > 1` (the hard task) every step also carries a query cue for one object and
the target is the latest real class of the queried object: several bindings must stay alive at
once and a distractor written into memory overwrites one of them. A single "latest event" target
is easy for a dense GRU (docs/design.md section 4); the bindings are what make the task hard.

The episode opens with one real event per object (steps 0..n_objects-1, each querying the object
it binds) so that every target is defined; `score` marks the steps scored (t >= n_objects, once
every object is bound). The embeddings (markers,
object, class and query vectors) come from `world_seed`, the episodes from the `seed` of
`sample`, so train and evaluation batches share one world and differ only in their draws.
"""

import math
from dataclasses import asdict, dataclass, replace

import torch
from torch import Tensor


@dataclass(frozen=True)
class StreamConfig:
    """Generator parameters. Rates are per step; `noise` is the std of the per-entry noise."""

    horizon: int = 64
    n_classes: int = 8
    n_objects: int = 1
    d_feature: int = 32
    event_rate: float = 0.1
    distractor_rate: float = 0.1
    noise: float = 0.5
    distractor_similarity: float = 0.8
    world_seed: int = 0

    def __post_init__(self) -> None:
        for name in ('horizon', 'n_classes', 'n_objects', 'd_feature'):
            if getattr(self, name) < 1:
                raise ValueError(f'StreamConfig.{name} must be >= 1, got {getattr(self, name)}')
        if self.horizon <= self.n_objects:
            raise ValueError('StreamConfig.horizon must exceed n_objects (the opening bindings)')
        if not (0 <= self.event_rate and 0 <= self.distractor_rate
                and self.event_rate + self.distractor_rate <= 1):
            raise ValueError('event_rate and distractor_rate must be >= 0 and sum to <= 1')
        if not -1 <= self.distractor_similarity <= 1:
            raise ValueError('distractor_similarity is a cosine, in [-1, 1]')
        if self.noise < 0:
            raise ValueError('noise must be >= 0')

    def replace(self, **changes) -> 'StreamConfig':
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)


# The easy task at N = 64 and the hard, long-horizon task (4 cued objects, queried at every step,
# distractors as frequent as events and hard to tell apart, noisy features).
EASY = StreamConfig(horizon=64, n_objects=1, event_rate=0.08, distractor_rate=0.08, noise=0.5,
                    distractor_similarity=0.8)
HARD = StreamConfig(horizon=512, n_objects=4, event_rate=0.12, distractor_rate=0.12, noise=0.8,
                    distractor_similarity=0.9)
PRESETS = {'easy': EASY, 'hard': HARD}


@dataclass
class Stream:
    """One batch of episodes; every tensor is [B, T] except z [B, T, d_feature]."""

    z: Tensor              # float32 features
    target: Tensor         # long, the class the action must name at each step
    is_event: Tensor       # bool, real events
    is_distractor: Tensor  # bool, look-alike events that must not change the target
    obj: Tensor            # long, the object of an event/distractor step (0 elsewhere)
    cls: Tensor            # long, the class shown at an event/distractor step (0 elsewhere)
    query: Tensor          # long, the object queried at each step (always 0 when n_objects == 1)
    score: Tensor          # bool, steps that are scored (every object bound)


def world(config: StreamConfig) -> dict[str, Tensor]:
    """The fixed embeddings of a task: markers, object, class and query vectors."""
    gen = torch.Generator().manual_seed(config.world_seed)
    d = config.d_feature
    event = torch.randn(d, generator=gen)
    other = torch.randn(d, generator=gen)
    other = other - (other @ event) / (event @ event) * event
    other = other / other.norm() * event.norm()
    sim = config.distractor_similarity
    return {'event': event,
            'distractor': sim * event + math.sqrt(max(0.0, 1 - sim * sim)) * other,
            'objects': torch.randn(config.n_objects, d, generator=gen),
            'classes': torch.randn(config.n_classes, d, generator=gen),
            'queries': torch.randn(config.n_objects, d, generator=gen)}


def latest_classes(is_event: Tensor, obj: Tensor, cls: Tensor, n_objects: int) -> Tensor:
    """[B, T, n_objects]: class of each object's latest real event at or before t (-1: none)."""
    B, T = is_event.shape
    steps = torch.arange(T).expand(B, T)
    out = torch.full((B, T, n_objects), -1, dtype=torch.long)
    for o in range(n_objects):
        hit = is_event & (obj == o)
        last, _ = torch.cummax(torch.where(hit, steps, torch.full_like(steps, -1)), dim=1)
        found = last >= 0
        out[..., o] = torch.where(found, cls.gather(1, last.clamp(min=0)), out[..., o])
    return out


def sample(config: StreamConfig, batch: int, seed: int, horizon: int | None = None) -> Stream:
    """`batch` episodes of `horizon` (default config.horizon) steps, deterministic in `seed`."""
    T = horizon or config.horizon
    K, C = config.n_objects, config.n_classes
    if T <= K:
        raise ValueError(f'horizon {T} must exceed n_objects {K}')
    emb = world(config)
    gen = torch.Generator().manual_seed(int(seed))
    u = torch.rand(batch, T, generator=gen)
    is_event = u < config.event_rate
    is_distractor = (u >= config.event_rate) & (u < config.event_rate + config.distractor_rate)
    obj = torch.randint(K, (batch, T), generator=gen)
    cls = torch.randint(C, (batch, T), generator=gen)
    query = torch.randint(K, (batch, T), generator=gen)
    noise = torch.randn(batch, T, config.d_feature, generator=gen) * config.noise
    # Opening bindings: one real event per object, in a random order.
    opening = torch.argsort(torch.rand(batch, K, generator=gen), dim=1)
    is_event[:, :K] = True
    is_distractor[:, :K] = False
    obj[:, :K] = opening
    active = is_event | is_distractor
    obj = torch.where(active, obj, torch.zeros_like(obj))
    cls = torch.where(active, cls, torch.zeros_like(cls))
    # While binding, each opening step queries the object it binds, so every target is defined.
    query[:, :K] = opening
    if K == 1:
        query = torch.zeros_like(query)

    marker = (is_event[..., None] * emb['event'] + is_distractor[..., None] * emb['distractor'])
    content = active[..., None] * (emb['objects'][obj] + emb['classes'][cls])
    z = marker + content + noise
    if K > 1:
        z = z + emb['queries'][query]

    latest = latest_classes(is_event, obj, cls, K)
    target = latest.gather(2, query[..., None])[..., 0]
    score = torch.zeros(batch, T, dtype=torch.bool)
    score[:, K:] = True
    return Stream(z=z.float(), target=target.clamp(min=0), is_event=is_event,
                  is_distractor=is_distractor, obj=obj, cls=cls, query=query, score=score)
