"""`python -m aura_ros train`: demonstrations in, a model directory aura_node runs out.

The demonstrations are built in memory (test/trainer_data.py: a cue lamp long before GO); the
quick configuration trains every stage for a few updates, so these tests check the pipeline, the
files and the contracts, not the model's quality.
"""

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))

from trainer_data import cue_demonstrations  # noqa: E402

from aura_ros.runtime import load_model_dir  # noqa: E402
from aura_ros.training import trainer  # noqa: E402
from aura_ros.training.trainer import (  # noqa: E402
    TrainerConfig,
    TrainerError,
    pipeline,
    quick_config,
    run,
    split_episodes,
)

QUICK = quick_config(TrainerConfig())


@pytest.fixture(scope='module')
def demos():
    return cue_demonstrations(episodes=8, frames=48, size=32, chunk=4)


@pytest.fixture(scope='module')
def quick_dir(tmp_path_factory, demos):
    out = tmp_path_factory.mktemp('trained') / 'model'
    lines = []
    report = run(demos, QUICK, out, 'python -m aura_ros train --quick (test)', log=lines.append)
    return out, report, lines


def test_quick_run_writes_a_format_2_model_dir_that_loads(quick_dir, demos):
    out, report, _ = quick_dir
    spec = load_model_dir(out)
    assert [c.name for c in spec.cameras] == ['image']
    assert (spec.cameras[0].height, spec.cameras[0].width) == (32, 32)
    assert spec.joint_names == demos.joint_names and spec.action_names == demos.action_names
    assert spec.action_mode == 'absolute' and spec.chunk == 4
    assert spec.action_period_s == pytest.approx(0.1)
    assert np.allclose(spec.joint_stats.mean, demos.stats()['joints']['mean'])
    assert spec.action_stats is not None and min(spec.action_stats.std) > 0
    assert spec.memory.gate_threshold == report['threshold'] in QUICK.select_thresholds
    for name in ('MODEL_CARD.md', 'report.json', 'losses.png', 'write_rate.png',
                 'error_vs_writes.png', 'baselines/always_write.safetensors',
                 'baselines/no_memory.safetensors'):
        assert (out / name).is_file(), name
    for method in ('always_write', 'no_memory'):     # complete model directories of their own
        baseline = load_model_dir(out / 'baselines' / method)
        assert baseline.name == f'model_{method}' and baseline.cameras == spec.cameras
        assert baseline.memory.gate_threshold == (0.0 if method == 'always_write' else
                                                  spec.memory.gate_threshold)
    saved = json.loads((out / 'report.json').read_text())
    assert set(saved['held_out']) == {'aura', 'always_write', 'no_memory'}
    assert saved['held_out']['no_memory']['writes_per_episode'] == 0
    assert saved['held_out']['always_write']['write_rate'] == 1.0
    assert len(saved['threshold_sweep']) == len(QUICK.select_thresholds)
    assert len(saved['histories']['aura']['phases']['gate']) == QUICK.training.gate_iters
    card = (out / 'MODEL_CARD.md').read_text()
    assert 'synthetic cue demonstrations' in card and '| always_write |' in card
    assert f"with no write AURA's error is {saved['no_write_error']:.3g}" in ' '.join(card.split())
    assert "scored by the gradient of the later actions' NLL under a training-only mixture " \
        'head' in card


@pytest.fixture(scope='module')
def bag_dir(tmp_path_factory):
    """`python -m aura_ros train --data BAGS --out DIR --quick` on three mcap bags of
    aura_ros.data.synthetic (cue-then-reach, six SO-101 joints, JointTrajectory commands)."""
    from aura_ros.cli import main
    from aura_ros.data.synthetic import write_bags

    root = tmp_path_factory.mktemp('bags')
    bags = write_bags(root / 'bags', cues=(0, 1, 2), storage='mcap', seconds=2.5)
    out = root / 'model'
    code = main(['train', '--data', str(bags), '--out', str(out), '--quick',
                 '--image-topic', '/camera/image_raw', '--joints-topic', '/joint_states'])
    assert code == 0
    return out


def test_train_quick_on_a_bag_folder_gives_a_model_dir(bag_dir):
    from aura_ros.data.synthetic import JOINT_NAMES

    spec = load_model_dir(bag_dir)
    assert spec.joint_names == JOINT_NAMES and spec.action_names == JOINT_NAMES
    assert [c.name for c in spec.cameras] == ['image'] and spec.chunk == 4
    assert spec.action_period_s == pytest.approx(1 / 30, rel=0.01)
    report = json.loads((bag_dir / 'report.json').read_text())
    assert 'bags' in report['source'] and report['held_out_episodes'] == 1
    assert report['command'].startswith('python -m aura_ros train --data ')


def test_the_node_runs_the_bag_trained_model_over_dds(bag_dir, make_node, executor, wait_for):
    pytest.importorskip('rclpy', reason='rclpy not installed')
    from sensor_msgs.msg import JointState
    from test_node import Rig, assert_chunk_contract, image_msg, nanoseconds

    from aura_ros.data.synthetic import JOINT_NAMES, REST, frame_image
    from aura_ros.ros.trajectory import answers

    rig = Rig(make_node, executor, wait_for, bag_dir)
    spec, lead = rig.node.spec, rig.node.params.chunk_min_lead_s
    answered = []
    try:
        # One step per frame; a chunk point due within chunk_min_lead_s of publishing is left
        # out (a whole chunk, if the step took longer than it lasts), so how many points
        # arrive depends on this machine's speed, not on the model: send frames until a chunk
        # came and check every chunk against the stamping rule.
        for k in range(20):
            joints = JointState(name=list(JOINT_NAMES), position=[float(v) for v in REST])
            joints.header.stamp = rig.now()
            rig.joint_pub.publish(joints)
            gates = len(rig.gates)
            stamp = rig.now()
            rig.image_pub.publish(image_msg(frame_image(k, k / 30, 1, (48, 64)), stamp))
            wait_for(lambda gates=gates: len(rig.gates) > gates, 10, executor, 'gate')
            executor.spin_once(timeout_sec=0.05)           # its chunk, if one was published
            answered += [(c, nanoseconds(stamp)) for c in rig.chunks
                         if answers(c, nanoseconds(stamp), spec.action_period_s) is not None]
            if answered and k >= 3:
                break
        assert answered, f'no chunk in {k + 1} steps: {rig.node.chunks_expired} expired'
        for chunk, observation in answered:
            assert list(chunk.joint_names) == list(JOINT_NAMES)
            assert_chunk_contract(chunk, observation, spec.action_period_s, spec.chunk, lead)
            assert all(np.isfinite(p.positions).all() for p in chunk.points)
        assert spec.chunk == 4
    finally:
        rig.close()


def test_hints_in_the_bags_teach_the_gate(tmp_path, capsys):
    """data: hint_topic + training: gate_target hint, end to end through the CLI; a hint topic
    whose messages never match is a clear error, not a silent gate without teacher."""
    from aura_ros.cli import main
    from aura_ros.data.synthetic import write_bags

    bags = write_bags(tmp_path / 'bags', cues=(0, 1, 2), storage='mcap', seconds=2.5, hints=True)
    config = tmp_path / 'train.yaml'
    config.write_text(yaml.safe_dump({'data': {'hint_topic': '/marker', 'hint_frames': 3},
                                      'training': {'gate_target': 'hint'}}))
    out = tmp_path / 'model'
    assert main(['train', '--data', str(bags), '--out', str(out), '--quick', '--config',
                 str(config), '--image-topic', '/camera/image_raw']) == 0
    load_model_dir(out)
    report = json.loads((out / 'report.json').read_text())
    gate = report['histories']['aura']['phases']['gate']
    assert gate and all('hint' in r and 'ib' not in r for r in gate)
    assert 'writing exactly on the hinted frames (messages on /marker, 3 frame(s) each)' in \
        (out / 'MODEL_CARD.md').read_text().replace('\n', ' ')
    config.write_text(yaml.safe_dump({'data': {'hint_topic': '/task_events',
                                               'hint_match': 'never'},
                                      'training': {'gate_target': 'hint'}}))
    assert main(['train', '--data', str(bags), '--out', str(tmp_path / 'none'), '--quick',
                 '--config', str(config), '--image-topic', '/camera/image_raw']) == 2
    assert "no training frame is hinted: no message on /task_events matches 'never'" in \
        capsys.readouterr().err


def test_the_so101_train_config_loads():
    """config/so101_train.yaml (the bundled SO-101 model's settings) stays a valid config."""
    cfg = TrainerConfig.load(Path(__file__).resolve().parents[1] / 'config/so101_train.yaml')
    assert cfg.training_config().gate_target == 'hint' and cfg.recon_size == 96
    assert cfg.data.hint_topic == '/task_events'
    assert (cfg.input_map, cfg.write_bias) == ('none', True)     # how models/so101 was trained


def test_the_so101_gru_config_is_the_bundled_recipe_with_a_full_budget_gru():
    """config/so101_train_gru.yaml (the README's closed-loop table with the GRU): the bundled
    recipe, and the GRU on AURA's whole budget with bfloat16 recurrent products only."""
    root = Path(__file__).resolve().parents[1] / 'config'
    bundled = TrainerConfig.load(root / 'so101_train.yaml')
    cfg = TrainerConfig.load(root / 'so101_train_gru.yaml')
    assert replace(cfg, baselines=bundled.baselines, baseline_training={},
                   threads=1) == bundled
    aura, gru = cfg.training_config(), cfg.training_config('gru')
    assert replace(gru, recurrent_dtype='float32') == aura and gru.recurrent_dtype == 'bfloat16'


def test_train_quick_on_a_lerobot_dataset(tmp_path):
    from aura_ros.cli import main
    from aura_ros.data.synthetic import write_lerobot_dataset

    data = write_lerobot_dataset(tmp_path / 'lerobot', cues=(0, 1, 2), seconds=2.0,
                                 image_size=(32, 32), cameras=('front',))
    out = tmp_path / 'model'
    assert main(['train', '--data', str(data), '--out', str(out), '--quick']) == 0
    spec = load_model_dir(out)
    assert len(spec.cameras) == 1 and spec.cameras[0].height == 32
    assert (out / 'MODEL_CARD.md').is_file()


def test_cli_refuses_a_non_empty_out_without_resume(bag_dir, capsys):
    from aura_ros.cli import main

    assert main(['train', '--data', 'x', '--out', str(bag_dir)]) == 2
    assert '--resume' in capsys.readouterr().err


def test_resume_skips_what_was_done(tmp_path, demos, monkeypatch):
    out = tmp_path / 'model'
    real_train = pipeline.train

    def crash_on_always_write(model, *args, **kwargs):
        if kwargs.get('name') == 'always_write':
            raise KeyboardInterrupt('stopped by the test')
        return real_train(model, *args, **kwargs)

    monkeypatch.setattr(pipeline, 'train', crash_on_always_write)
    with pytest.raises(KeyboardInterrupt):
        run(demos, QUICK, out, 'first')
    state = json.loads((out / 'checkpoints' / 'state.json').read_text())
    assert state['done'] == ['backbone', 'features', 'aura:warmup', 'aura:gate', 'aura:carry']
    monkeypatch.setattr(pipeline, 'train', real_train)
    backbone_file = out / 'checkpoints' / 'backbone.safetensors'
    stamp = backbone_file.stat().st_mtime_ns
    lines = []
    report = run(demos, QUICK, out, 'resumed', resume=True, log=lines.append)
    assert any(line.startswith('resuming from') for line in lines)
    assert not any(line.startswith('aura: training') or line.startswith('backbone:')
                   for line in lines)
    assert any(line.startswith('always_write: training') for line in lines)
    assert backbone_file.stat().st_mtime_ns == stamp
    assert len(report['histories']['aura']['phases']['warmup']) == QUICK.training.warmup_iters
    load_model_dir(out)
    lines = []
    run(demos, quick_config(TrainerConfig(seed=1)), out, 'reseeded', resume=True,
        log=lines.append)     # the split and the backbone read the seed: all again
    assert 'reusing nothing; retraining backbone (seed changed)' in lines[0]
    assert backbone_file.stat().st_mtime_ns != stamp


def test_resume_after_a_gate_setting_change_keeps_the_backbone_and_features(tmp_path, demos,
                                                                            monkeypatch):
    """The gate-collapse advice (another warm-up write rate) costs the memory models only."""
    out = tmp_path / 'model'
    run(demos, QUICK, out, 'first')
    files = {n: (out / 'checkpoints' / f'{n}.safetensors').stat().st_mtime_ns
             for n in ('backbone', 'features', 'aura')}

    def must_not_run(*args, **kwargs):
        raise AssertionError('the backbone or its features were computed again')

    monkeypatch.setattr(pipeline, 'train_backbone', must_not_run)
    monkeypatch.setattr(pipeline, 'compute_features', must_not_run)
    rate = replace(QUICK, training=replace(QUICK.training, warmup_write_rate=0.15))
    lines = []
    report = run(demos, rate, out, 'other rate', resume=True, log=lines.append)
    assert lines[0].endswith('reusing backbone, features; retraining aura (training changed); '
                             'always_write (training changed); no_memory (training changed)')
    assert report['training']['warmup_write_rate'] == 0.15
    for name in ('backbone', 'features'):
        assert (out / 'checkpoints' / f'{name}.safetensors').stat().st_mtime_ns == files[name]
    assert (out / 'checkpoints' / 'aura.safetensors').stat().st_mtime_ns != files['aura']
    wider = replace(rate, d_key=4)           # a memory setting: the memory models only, too
    lines = []
    run(demos, wider, out, 'smaller keys', resume=True, log=lines.append)
    assert 'reusing backbone, features; retraining aura (d_key changed)' in lines[0]
    assert load_model_dir(out).memory.d_key == 4
    lines = []
    run(demos, replace(wider, write_decay=True), out, 'fading writes', resume=True,
        log=lines.append)
    assert 'reusing backbone, features; retraining aura (write_decay changed)' in lines[0]
    assert load_model_dir(out).memory.write_decay
    assert 'to_decay.weight' in trainer.load_tensors(out / 'memory.safetensors')


def test_resume_adds_a_baseline_with_its_own_budget(tmp_path, demos):
    """More baselines (with a smaller budget of their own) on a trained run: only they train,
    the card names their budget; any other change is still refused."""
    out = tmp_path / 'model'
    run(demos, QUICK, out, 'first')
    aura_before = trainer.load_tensors(out / 'memory.safetensors')
    more = replace(QUICK, baselines=(*QUICK.baselines, 'gru'), baseline_training={
        'gru': {'warmup_iters': 2, 'gate_iters': 0, 'carry_iters': 1}})
    lines = []
    report = run(demos, more, out, 'with gru', resume=True, log=lines.append)
    started = [line.split(':')[0] for line in lines if ': training (' in line]
    assert started == ['gru']
    phases = report['histories']['gru']['phases']
    assert len(phases['warmup']) == 2 and len(phases.get('gate', [])) == 0
    aura_after = trainer.load_tensors(out / 'memory.safetensors')
    assert aura_after.keys() == aura_before.keys()
    assert all(np.array_equal(aura_after[k], aura_before[k]) for k in aura_before)
    assert (out / 'baselines' / 'gru.safetensors').is_file()
    assert 'gru (warmup_iters 2, gate_iters 0, carry_iters 1)' in \
        (out / 'MODEL_CARD.md').read_text()
    state = json.loads((out / 'checkpoints' / 'state.json').read_text())
    assert state['config']['baselines'] == list(more.baselines)
    lines = []
    run(demos, replace(more, d_model=16), out, 'changed', resume=True, log=lines.append)
    assert 'reusing nothing; retraining backbone (d_model changed)' in lines[0]


def test_bad_baseline_budgets_are_named():
    with pytest.raises(TrainerError, match='baseline_training must be a mapping from baselines'):
        TrainerConfig(baseline_training={'gru': {'warmup_iters': 2}})       # gru not listed
    with pytest.raises(TrainerError, match='unknown baseline_training.gru key.*warmup'):
        TrainerConfig(baselines=('gru',), baseline_training={'gru': {'warmup': 2}})
    with pytest.raises(TrainerError, match='baseline_training.gru: .*warmup_iters'):
        TrainerConfig(baselines=('gru',), baseline_training={'gru': {'warmup_iters': -1}})
    with pytest.raises(TrainerError, match='recurrent_dtype'):
        TrainerConfig(baselines=('gru',), baseline_training={'gru': {'recurrent_dtype': 'half'}})
    with pytest.raises(TrainerError, match='threads must be a positive integer'):
        TrainerConfig(threads=0)


def test_forced_gate_collapse_is_logged_and_reported(tmp_path, demos):
    # these settings shut the gate of the layer before input_map / write_bias (on whitened
    # features it stays open for these 10 updates): the test is about reporting a collapse
    cfg = quick_config(TrainerConfig(input_map='none', write_bias=True,
                                     training={'w_sparse': 1000.0, 'w_ib': 0.0, 'lr': 0.05,
                                               'gate_iters': 10, 'collapse_patience': 4}))
    lines = []
    report = run(demos, cfg, tmp_path / 'model', 'collapse', log=lines.append)
    assert any('WARNING: aura: gate collapsed (closed)' in line for line in lines)
    assert report['collapses'] and report['collapses'][0]['kind'] == 'closed'
    assert '**Gate collapse**' in (tmp_path / 'model' / 'MODEL_CARD.md').read_text()


def test_bad_config_keys_are_named(tmp_path):
    path = tmp_path / 'train.yaml'
    path.write_text(yaml.safe_dump({'seed': 1, 'lerning_rate': 0.1}))
    with pytest.raises(TrainerError, match='unknown key.*lerning_rate'):
        TrainerConfig.load(path)
    path.write_text(yaml.safe_dump({'training': {'ofsets': [1, 2]}}))
    with pytest.raises(TrainerError, match='unknown training key.*ofsets'):
        TrainerConfig.load(path)
    path.write_text(yaml.safe_dump({'training': {'offsets': [0, 2]}}))
    with pytest.raises(TrainerError, match='offsets must be positive'):
        TrainerConfig.load(path)
    with pytest.raises(TrainerError, match="action_mode must be 'absolute' or 'delta'"):
        TrainerConfig(action_mode='relative')
    with pytest.raises(TrainerError, match="gate_target 'hint' needs the frames.*hint_topic"):
        TrainerConfig(training={'gate_target': 'hint'})


def test_cli_names_a_bad_config_key_and_exits_2(tmp_path, capsys):
    from aura_ros.cli import main

    path = tmp_path / 'train.yaml'
    path.write_text('held_out: 0.2\nbackbone_kind: cnn\n')
    code = main(['train', '--data', str(tmp_path), '--out', str(tmp_path / 'm'),
                 '--config', str(path)])
    assert code == 2 and 'backbone_kind' in capsys.readouterr().err


def test_delta_mode_model_dir(tmp_path, demos):
    cfg = quick_config(TrainerConfig(action_mode='delta'))
    run(demos, cfg, tmp_path / 'model', 'delta')
    spec = load_model_dir(tmp_path / 'model')
    assert spec.action_mode == 'delta'


def test_one_long_episode_is_split_by_time_blocks():
    one = cue_demonstrations(episodes=1, frames=200)
    split = split_episodes(one, TrainerConfig(held_out=0.2, time_blocks=10))
    assert sum(len(e) for e in split.train) + sum(len(e) for e in split.held_out) == 200
    assert len(split.held_out) == 2 and all(len(e) == 20 for e in split.held_out)
    assert 'time blocks' in split.how
    many = split_episodes(cue_demonstrations(episodes=10, frames=20), TrainerConfig())
    assert (len(many.train), len(many.held_out)) == (8, 2)


def test_quick_keeps_the_users_settings():
    cfg = quick_config(TrainerConfig(training={'gate_iters': 2}, data={'chunk': 2}))
    assert cfg.training.gate_iters == 2 and cfg.training.warmup_iters == 6
    assert cfg.data.chunk == 2 and cfg.data.image_short_side == 32
    assert cfg.to_dict()['data'] == {'image_short_side': 32, 'chunk': 2}




def tiny_encoder(path: Path) -> Path:
    """A user's image encoder: [N, 3, 32, 32] 'pixel_values' -> 'embedding' [N, 8, 1, 1]."""
    import warnings

    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)
        torch.onnx.export(net, (torch.zeros(1, 3, 32, 32),), str(path), dynamo=False,
                          input_names=['pixel_values'], output_names=['embedding'],
                          dynamic_axes={'pixel_values': {0: 'n'}, 'embedding': {0: 'n'}})
    return path


def test_a_users_onnx_encoder_becomes_the_backbone(tmp_path, demos):
    from aura_ros.runtime import AuraRuntime

    encoder = tiny_encoder(tmp_path / 'encoder.onnx')
    cfg = quick_config(TrainerConfig(backbone='onnx', encoder_onnx=str(encoder),
                                     encoder_mean=(0.4, 0.4, 0.4), encoder_std=(0.2, 0.2, 0.2)))
    out = tmp_path / 'model'
    run(demos, cfg, out, 'onnx encoder')
    spec = load_model_dir(out)
    assert spec.memory.d_model == 8 + 2              # encoder width + joints
    assert spec.cameras[0].mean == (0.4, 0.4, 0.4) and spec.cameras[0].std == (0.2, 0.2, 0.2)
    # The runtime's backbone gives the features the memory was trained on.
    import torch

    from aura_ros.training.onnx_encoder import OnnxEncoder

    ep = demos.episodes[0]
    runtime = AuraRuntime.from_model_dir(out, device='cpu')
    runtime.step(ep.images['image'][0], 'rgb8', ep.joints[0])
    joints = (ep.joints[:1] - np.asarray(spec.joint_stats.mean)) / np.asarray(spec.joint_stats.std)
    mine = OnnxEncoder(cfg, demos).encode([ep.images['image'][:1]],
                                          torch.from_numpy(joints.astype(np.float32)))
    assert np.allclose(runtime.features.numpy(), mine.numpy(), atol=1e-5)


def test_a_bad_encoder_is_named(tmp_path, demos):
    encoder = tiny_encoder(tmp_path / 'encoder.onnx')
    cfg = quick_config(TrainerConfig(backbone='onnx', encoder_onnx=str(encoder),
                                     encoder_output='logits'))
    from aura_ros.training.onnx_encoder import EncoderError

    with pytest.raises(EncoderError, match=r"no output 'logits'; outputs: \['embedding'\]"):
        run(demos, cfg, tmp_path / 'model', 'bad encoder')


def test_features_in_data_gives_a_model_without_backbone(tmp_path):
    from aura_ros.data import Demonstrations, Episode

    rng = np.random.default_rng(0)
    episodes = [Episode(name=f'f{i}', stamps=np.arange(40) * 0.1, images={},
                        joints=rng.normal(size=(40, 2)).astype(np.float32),
                        actions=rng.normal(size=(40, 3, 2)).astype(np.float32),
                        features=rng.normal(size=(40, 12)).astype(np.float32))
                for i in range(4)]
    demos = Demonstrations(source='features', cameras=(), image_size=(1, 1),
                           joint_names=('a', 'b'), action_names=('a', 'b'), action_period_s=0.1,
                           chunk=3, episodes=episodes)
    run(demos, QUICK, tmp_path / 'model', 'features in')
    spec = load_model_dir(tmp_path / 'model')
    assert spec.features_in and spec.memory.d_model == 12
    assert not (tmp_path / 'model' / 'backbone.onnx').exists()


def test_an_unknown_data_key_is_named(tmp_path, capsys):
    from aura_ros.cli import main

    path = tmp_path / 'train.yaml'
    path.write_text(yaml.safe_dump({'data': {'image_topic': '/cam'}}))
    code = main(['train', '--data', str(tmp_path), '--out', str(tmp_path / 'm'),
                 '--config', str(path)])
    err = capsys.readouterr().err
    assert code == 2 and 'data' in err and 'image_topic' in err and 'image_topics' in err


def test_every_long_stage_reports_progress_with_rate_and_eta(tmp_path, demos, monkeypatch,
                                                             capsys):
    """Plain lines on stderr (a log file gets them; a tqdm bar is off without a terminal)."""
    from aura_ros import progress

    monkeypatch.setattr(progress, 'EVERY_S', 0.0)       # a line per update, not per 10 s
    run(demos, QUICK, tmp_path / 'model', 'progress', log=lambda line: None)
    err = capsys.readouterr().err
    for stage, unit in (('backbone', 'steps'), ('features (train)', 'frames'),
                        ('aura warmup', 'updates'), ('aura gate', 'updates'),
                        ('aura carry', 'updates'), ('always_write warmup', 'updates')):
        assert f'\n{stage}: done, ' in '\n' + err, stage
        assert any(line.startswith(f'{stage}: ') and f'{unit}/s, ETA ' in line
                   for line in err.splitlines()), stage


def test_train_flags_for_topics_names_and_urdf_go_into_the_config(tmp_path):
    from aura_ros.cli import build_parser
    from aura_ros.training.trainer import joint_limits, with_topics

    urdf = tmp_path / 'robot.urdf'
    urdf.write_text('<robot name="r"><joint name="shoulder" type="revolute"><limit lower="-1" '
                    'upper="1"/></joint><joint name="elbow" type="continuous"/></robot>')
    args = build_parser().parse_args([
        'train', '--data', 'x', '--out', 'y', '--action-topic', '/arm/joint_trajectory',
        '--action-topic', '/grip/joint_trajectory', '--joints', 'shoulder,elbow,j_extra',
        '--actions', 'shoulder,elbow', '--extra-joints', 'j_extra', '--urdf', str(urdf)])
    cfg = with_topics(TrainerConfig(), args)
    assert cfg.data.action_topic == ('/arm/joint_trajectory', '/grip/joint_trajectory')
    assert cfg.to_dict()['data'] == {
        'action_topic': ['/arm/joint_trajectory', '/grip/joint_trajectory'],
        'joint_names': ['shoulder', 'elbow', 'j_extra'], 'action_names': ['shoulder', 'elbow'],
        'extra_joints': ['j_extra']}
    demos = cue_demonstrations(episodes=2, frames=8)          # actions: shoulder, elbow
    assert joint_limits(cfg, demos) == ({'shoulder': (-1.0, 1.0)}, str(urdf))
    with pytest.raises(TrainerError, match='joint_limits names wrist, not actions'):
        joint_limits(replace(cfg, joint_limits={'wrist': [0, 1]}), demos)


def test_the_data_and_training_sub_configs_are_typed_and_checked_on_creation():
    from aura_ros.data import DataError
    from aura_ros.data.config import DataConfig
    from aura_ros.memory.training import TrainingConfig

    cfg = TrainerConfig.from_dict({'seed': 3, 'data': {'chunk': 2},
                                   'training': {'gate_iters': 5}})
    assert isinstance(cfg.data, DataConfig) and cfg.data.chunk == 2
    assert isinstance(cfg.training, TrainingConfig)
    assert (cfg.training.gate_iters, cfg.training.seed) == (5, 3)     # the top-level seed
    assert TrainerConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(DataError, match='chunk'):
        TrainerConfig(data={'chunk': 0})                      # on creation, not at load time


def test_resume_reads_a_checkpoint_whose_config_spells_out_defaults(tmp_path, quick_dir, demos):
    """Older trainers wrote the data mapping as given, defaults included: the same config."""
    import shutil

    out = tmp_path / 'model'
    shutil.copytree(quick_dir[0], out)
    state_file = out / 'checkpoints' / 'state.json'
    state = json.loads(state_file.read_text())
    state['config']['data'] = {**state['config']['data'], 'image_topics': ['/camera/image_raw'],
                               'joints_topic': '/joint_states'}
    state['config']['training'] = {**state['config']['training'], 'lr': 2e-3}
    state_file.write_text(json.dumps(state))
    lines = []
    run(demos, QUICK, out, 'resumed', resume=True, log=lines.append)
    assert lines[0].endswith('reusing backbone, features, aura, always_write, no_memory')


def test_resume_retrains_a_model_whose_trainer_defaults_changed(tmp_path, quick_dir, demos):
    """A checkpoint trained under other trainer defaults (its recorded TrainingConfig differs
    from what the same train.yaml gives now) retrains that model, and only that one."""
    import shutil

    out = tmp_path / 'model'
    shutil.copytree(quick_dir[0], out)
    state_file = out / 'checkpoints' / 'state.json'
    state = json.loads(state_file.read_text())
    assert set(state['trained_with']) == {'aura', 'always_write', 'no_memory'}
    state['trained_with']['aura']['utility'] = 'counterfactual'    # an older trainer's default
    state_file.write_text(json.dumps(state))
    lines = []
    run(demos, QUICK, out, 'resumed', resume=True, log=lines.append)
    assert lines[0].endswith('reusing backbone, features, always_write, no_memory; retraining '
                             'aura (training changed)')
    state = json.loads(state_file.read_text())
    assert state['trained_with']['aura']['utility'] == QUICK.training.utility


def test_resume_reuses_a_model_recorded_before_a_training_field_was_added(tmp_path, quick_dir,
                                                                          demos):
    """A TrainingConfig field added later, at its default, is what an older checkpoint trained
    with: its models are reused, not retrained."""
    import shutil

    out = tmp_path / 'model'
    shutil.copytree(quick_dir[0], out)
    state_file = out / 'checkpoints' / 'state.json'
    state = json.loads(state_file.read_text())
    for recorded in state['trained_with'].values():
        del recorded['budget_balance']                 # an older trainer did not record it
    state_file.write_text(json.dumps(state))
    lines = []
    run(demos, QUICK, out, 'resumed', resume=True, log=lines.append)
    assert lines[0].endswith('reusing backbone, features, aura, always_write, no_memory'), lines[0]


def test_resume_without_a_baseline_keeps_its_checkpoint_and_does_not_name_it(tmp_path,
                                                                              quick_dir, demos):
    """A run resumed with a baseline left out of `baselines` neither reuses nor retrains it (the
    log names only what this run uses), and keeps its stages for a later run that lists it."""
    import shutil

    out = tmp_path / 'model'
    shutil.copytree(quick_dir[0], out)
    lines = []
    run(demos, replace(QUICK, baselines=('always_write',)), out, 'resumed',
        resume=True, log=lines.append)
    assert lines[0].endswith('reusing backbone, features, aura, always_write'), lines[0]
    done = json.loads((out / 'checkpoints' / 'state.json').read_text())['done']
    assert {'no_memory:warmup', 'no_memory:gate', 'no_memory:carry'} <= set(done)


def test_the_stage_api_gives_back_a_trained_runs_held_out_episodes(quick_dir, demos):
    """What bench/so101_heldout.py re-runs: the trainer's split, targets and saved features."""
    from aura_ros.memory import MemoryConfig, build_model, load_checkpoint
    from aura_ros.memory.training import FeatureEpisode, evaluate

    out, report, _ = quick_dir
    cfg = TrainerConfig.from_dict(json.loads((out / trainer.REPORT_FILE).read_text())['config'])
    assert cfg == QUICK
    episodes = trainer.prepare(demos, cfg)
    _, z_held = trainer.saved_features(out / trainer.CHECKPOINTS / 'features.safetensors',
                                       episodes.split)
    held = [FeatureEpisode(z, episodes.targets(e), name=e.name)
            for z, e in zip(z_held, episodes.split.held_out, strict=True)]
    config = MemoryConfig.from_dict(yaml.safe_load((out / 'model.yaml').read_text())['memory'])
    aura = load_checkpoint(out / 'memory.safetensors', build_model('aura', config), config=config)
    assert evaluate(aura, held)['action_error'] == pytest.approx(
        report['held_out']['aura']['action_error'], rel=1e-6)
    none = evaluate(aura, held, 1.0)                   # the card's error with no write
    assert none['writes_per_episode'] == 0
    assert none['action_error'] == pytest.approx(report['no_write_error'], rel=1e-6)


def test_a_whitened_memory_without_bias_writes_is_fitted_and_shipped(tmp_path, demos):
    """`input_map: whiten` fits the map on the run's own training features, once, for AURA
    and the baselines alike; the model directory carries it (the runtime needs nothing new)."""
    import torch

    from aura_ros.memory import fit_input_map
    from aura_ros.runtime.model_dir import load_memory

    assert (QUICK.input_map, QUICK.write_bias) == ('whiten', False)     # the default
    out = tmp_path / 'model'
    run(demos, QUICK, out, 'whitened')
    spec = load_model_dir(out)
    assert (spec.memory.input_map, spec.memory.write_bias) == ('whiten', False)
    layer = load_memory(out, spec)
    features = trainer.load_tensors(out / 'checkpoints' / 'features.safetensors')
    want = load_memory(out, spec)
    fit_input_map(want, [z for k, z in sorted(features.items()) if k.startswith('train')])
    assert not torch.equal(layer.input_map, torch.eye(spec.memory.d_model))
    torch.testing.assert_close(layer.input_map, want.input_map)
    floor = trainer.load_tensors(out / 'baselines' / 'no_memory.safetensors')
    assert torch.equal(floor['input_map'], layer.input_map)
    with pytest.raises(TrainerError, match='input_map'):
        replace(QUICK, input_map='pca')
    old = tmp_path / 'old'
    run(demos, replace(QUICK, input_map='none', write_bias=True), old, 'the layer before')
    assert not any(k.startswith('input_')
                   for k in trainer.load_tensors(old / 'memory.safetensors'))


def test_the_default_gate_target_scores_writes_by_the_mixture_heads_nll():
    """The trainer's label-free default: a 4-component training-only mixture head whose NLL
    scores writes (docs/training.md, "What else was tried for the centre cue"); `mixture: 0`,
    or a target the head cannot score, gives the action-loss target back, and asking the head
    to score one names the way out."""
    cfg = TrainerConfig()
    assert cfg.mixture == 4 and cfg.training_config().utility_loss == 'mixture'
    assert cfg.training_config().w_mixture == 0.03
    assert TrainerConfig(mixture=0).training_config().utility_loss == 'action'
    assert TrainerConfig.from_dict(cfg.to_dict()) == cfg
    assert TrainerConfig.from_dict(TrainerConfig(mixture=0).to_dict()) == TrainerConfig(mixture=0)
    margin = TrainerConfig(training={'utility': 'counterfactual', 'write_budget': None})
    assert margin.training.utility_loss == 'action'          # a target the head cannot score
    assert TrainerConfig.from_dict(margin.to_dict()) == margin
    with pytest.raises(TrainerError, match="utility_loss 'action'"):
        TrainerConfig(training={'utility': 'counterfactual', 'write_budget': None,
                                'utility_loss': 'mixture'})


def test_the_mixture_config_is_the_dart_recipe_with_the_trainers_default_target():
    """config/so101_label_free_dart_mixture.yaml (docs/training.md's centre-cue runs) is the DART
    recipe, pinned to the head-less target its numbers were measured with, with the trainer's
    default target spelled out: nothing else differs, and it is what the defaults give."""
    root = Path(__file__).resolve().parents[1] / 'config'
    dart = TrainerConfig.load(root / 'so101_label_free_dart.yaml')
    cfg = TrainerConfig.load(root / 'so101_label_free_dart_mixture.yaml')
    assert (dart.mixture, dart.training_config().utility_loss) == (0, 'action')
    assert replace(cfg, mixture=0, training=dart.training) == dart
    assert replace(cfg.training_config(), utility_loss='action') == dart.training_config()
    assert TrainerConfig.from_dict({k: v for k, v in cfg.to_dict().items()
                                    if k != 'mixture'}) == cfg


def test_resume_retrains_models_an_older_trainer_made_without_the_mixture_head(tmp_path,
                                                                                demos):
    """A checkpoint from before the head was the default records no `mixture` key (and no
    utility_loss): its memory models were trained without the head, so a resume under today's
    default retrains them (keeping the backbone and features), and the result loads."""
    import shutil

    without = TrainerConfig.from_dict({**QUICK.to_dict(), 'mixture': 0})
    assert without.training_config().utility_loss == 'action'
    with pytest.raises(TrainerError, match='set mixture > 0'):
        replace(QUICK, mixture=0)              # keeps QUICK's training: the head's target
    base = tmp_path / 'old'
    run(demos, without, base, 'an older trainer')
    out = tmp_path / 'model'
    shutil.copytree(base, out)
    state_file = out / 'checkpoints' / 'state.json'
    state = json.loads(state_file.read_text())
    del state['config']['mixture']
    for recorded in state['trained_with'].values():
        del recorded['utility_loss'], recorded['w_mixture']
    state_file.write_text(json.dumps(state))
    saved = TrainerConfig.from_saved(state['config'])       # what the benches read a run with
    assert (saved.mixture, saved.training_config().utility_loss) == (0, 'action')
    lines = []
    run(demos, QUICK, out, 'resumed', resume=True, log=lines.append)
    assert lines[0].endswith('reusing backbone, features; retraining aura (mixture changed); '
                             'always_write (mixture changed); no_memory (mixture changed)'), \
        lines[0]
    assert load_model_dir(out).memory.mixture == 4
    assert any(k.startswith('mixture_out') for k in
               trainer.load_tensors(out / 'memory.safetensors'))
    shutil.copytree(base, tmp_path / 'again')           # and the same old run, resumed as it was
    lines = []
    run(demos, without, tmp_path / 'again', 'resumed', resume=True, log=lines.append)
    assert lines[0].endswith('reusing backbone, features, aura, always_write, no_memory'), \
        lines[0]
