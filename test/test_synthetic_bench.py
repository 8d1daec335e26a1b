"""The synthetic event-recall generator, and a quick benchmark run that must show real learning.

The benchmark test trains every method on the quick easy setting (about a minute on one thread)
and checks behaviour, not numbers from the paper: AURA is far above chance and above no memory,
and its gate writes on fewer than half of the steps.
"""

import json
from dataclasses import asdict

import pytest
import torch

from aura_ros.tasks.synthetic import EASY, HARD, StreamConfig, latest_classes, sample
from aura_ros.training import synthetic_bench as bench


@pytest.mark.parametrize('config', [EASY, HARD.replace(horizon=96)])
def test_shapes_and_dtypes(config):
    s = sample(config, 5, seed=3)
    T = config.horizon
    assert s.z.shape == (5, T, config.d_feature) and s.z.dtype == torch.float32
    assert s.target.shape == (5, T) and s.target.dtype == torch.long
    for mask in (s.is_event, s.is_distractor, s.score):
        assert mask.shape == (5, T) and mask.dtype == torch.bool
    assert not (s.is_event & s.is_distractor).any()
    assert 0 <= int(s.target.min()) and int(s.target.max()) < config.n_classes
    assert s.score[:, config.n_objects:].all() and not s.score[:, :config.n_objects].any()


def test_deterministic_by_seed():
    a, b, c = sample(HARD, 4, seed=7), sample(HARD, 4, seed=7), sample(HARD, 4, seed=8)
    for field in ('z', 'target', 'is_event', 'is_distractor', 'query'):
        assert torch.equal(getattr(a, field), getattr(b, field))
    assert not torch.equal(a.z, c.z)


def test_rates_follow_the_config():
    config = StreamConfig(horizon=400, event_rate=0.1, distractor_rate=0.2)
    s = sample(config, 64, seed=0)
    assert abs(float(s.is_event[:, 1:].float().mean()) - 0.1) < 0.01
    assert abs(float(s.is_distractor.float().mean()) - 0.2) < 0.01


@pytest.mark.parametrize('config', [EASY.replace(horizon=200), HARD.replace(horizon=200)])
def test_targets_follow_real_events_only(config):
    """A slow reference: the target is the latest real class of the queried object."""
    s = sample(config, 6, seed=11)
    for b in range(6):
        latest = {}
        for t in range(config.horizon):
            if s.is_event[b, t]:
                latest[int(s.obj[b, t])] = int(s.cls[b, t])
            if s.score[b, t]:
                assert int(s.target[b, t]) == latest[int(s.query[b, t])]


def test_distractors_do_not_change_targets():
    """Dropping every distractor from the record leaves every target as it was."""
    s = sample(HARD.replace(distractor_rate=0.4, event_rate=0.1), 8, seed=5)
    assert s.is_distractor.any()
    without = latest_classes(s.is_event, s.obj, s.cls, HARD.n_objects)
    with_distractors = latest_classes(s.is_event | s.is_distractor, s.obj, s.cls, HARD.n_objects)
    assert torch.equal(without.gather(2, s.query[..., None])[..., 0][s.score], s.target[s.score])
    assert not torch.equal(with_distractors, without), 'distractors would have changed them'


def test_distractor_marker_resembles_the_event_marker():
    from aura_ros.tasks.synthetic import world
    emb = world(HARD)
    cos = torch.nn.functional.cosine_similarity(emb['event'], emb['distractor'], dim=0)
    assert abs(float(cos) - HARD.distractor_similarity) < 1e-5


def test_t_interval():
    stat = bench.summarise([1.0, 2.0, 3.0])
    assert stat['mean'] == pytest.approx(2.0)
    assert stat['ci95'][1] - 2.0 == pytest.approx(4.303 * 1.0 / 3 ** 0.5, rel=1e-3)
    assert bench.summarise([0.5])['ci95'] == [0.5, 0.5]


def test_quick_benchmark_learns(tmp_path):
    torch.set_num_threads(1)
    setting = bench.quick_settings()[0]
    result = bench.run_bench([setting], [0], progress=False, log=lambda *_: None)
    (cfg,) = result.configurations
    m = cfg['methods']
    assert set(bench.ORDER) <= set(m)
    acc = {name: m[name]['accuracy']['mean'] for name in m}
    assert acc['aura'] > 0.6, acc                      # chance is 0.125
    assert acc['aura'] > acc['no_memory'] + 0.3, acc
    horizon = cfg['horizon']
    assert m['aura']['writes_per_episode']['mean'] < 0.5 * horizon
    assert m['always_write']['writes_per_episode']['mean'] == horizon
    assert m['aura']['p_write_event'] > m['aura']['p_write_distractor']
    text = json.dumps(asdict(result))
    assert 'p_write_event' in text
    assert 'aura' in bench.markdown(result)
    paths = bench.plots(result, tmp_path)
    assert all(p.exists() and p.stat().st_size > 1000 for p in paths)
    part = tmp_path / 'part.json'                   # runs split over processes merge into one
    part.write_text(json.dumps(asdict(result)))
    merged = bench.merge([part, part])
    assert len(merged.configurations) == 2 * len(result.configurations)
    assert merged.command == f'{result.command} ; {result.command}'
