"""`python -m aura_ros init-model` writes every file of the model directory with one mode."""

import os
import stat

from aura_ros.cli import main


def test_init_model_files_share_one_mode(tmp_path, capsys):
    """#15 row 22: memory.safetensors came out 0600 while its siblings were 0644."""
    out = tmp_path / 'model'
    old = os.umask(0o022)
    try:
        assert main(['init-model', '--out', str(out), '--image-size', '16', '--d-model', '16']) \
            == 0
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert set(modes.values()) == {0o644}, {k: oct(v) for k, v in modes.items()}


def test_init_model_writes_every_model_yaml_feature(tmp_path, capsys):
    """A rig's plumbing before training: two cameras (sizes, transports), groups, limits, the
    threshold; and a features-in model. Each loads and runs one step."""
    import numpy as np

    from aura_ros.runtime import AuraRuntime, load_model_dir

    out = tmp_path / 'rig'
    assert main(['init-model', '--out', str(out), '--camera', 'front:24x32',
                 '--camera', 'wrist:16x16:compressed', '--joints', 'a,b,c,j_extra',
                 '--actions', 'a,b,c', '--group', 'arm_controller=a,b',
                 '--group', 'gripper_controller=c', '--limit', 'c=0,0.5', '--d-model', '16',
                 '--gate-threshold', '0.7', '--period', '0.05']) == 0
    assert 'cameras front 24x32 raw, wrist 16x16 compressed' in capsys.readouterr().out
    spec = load_model_dir(out)
    assert [(c.name, c.height, c.width, c.transport) for c in spec.cameras] == [
        ('front', 24, 32, 'raw'), ('wrist', 16, 16, 'compressed')]
    assert {g.name: g.joints for g in spec.output_groups} == {
        'arm_controller': ('a', 'b'), 'gripper_controller': ('c',)}
    assert spec.joint_limits == {'c': (0.0, 0.5)} and spec.memory.gate_threshold == 0.7
    runtime = AuraRuntime.from_model_dir(out, device='cpu')
    result = runtime.step_frames({'front': (np.zeros((24, 32, 3), np.uint8), 'rgb8'),
                                  'wrist': (np.zeros((16, 16, 3), np.uint8), 'rgb8')},
                                 np.zeros(4))
    assert set(result.targets) == {'arm_controller', 'gripper_controller'}
    assert ((result.targets['gripper_controller'] >= 0)
            & (result.targets['gripper_controller'] <= 0.5)).all()
    features = tmp_path / 'features'
    assert main(['init-model', '--out', str(features), '--features-in', '--d-model', '8',
                 '--joints', 'a', '--actions', 'a']) == 0
    assert load_model_dir(features).features_in
    assert main(['init-model', '--out', str(tmp_path / 'bad'), '--limit', 'a1=1']) == 2
    assert '--limit a1=1: expected ACTION=LOWER,UPPER' in capsys.readouterr().out
