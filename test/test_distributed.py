"""`train` under torchrun: 2 ranks on the CPU over loopback (gloo) against one process.

A 2-rank run with per-rank batch B must train on exactly the batches of a one-process run with
batch 2B (every rank draws the global batch from the same seeded sampler and keeps its rows; DDP
averages the gradients; losses divide by the global count of scored steps). What may differ is
the order of float32 sums (two half-batch gradients added by the all-reduce instead of one sum),
about one float32 rounding (eps 1.2e-7) per update; over the few dozen updates of a quick run
the measured largest relative difference of any logged loss is ~2e-7. The tolerance, 1e-5
relative, is ~50x that and still far below any change a wrong sample, a lost gradient or a rank
training on its own rows alone would make (those move the losses by 1e-2 and more).
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist
import yaml

from aura_ros.training import distributed
from aura_ros.training.trainer import QUICK, QUICK_DATA

RTOL = 1e-5
TOPICS = ['--image-topic', '/camera/image_raw', '--joints-topic', '/joint_states']


def plain(value):
    return list(value) if isinstance(value, tuple) else value


def write_config(path: Path, per_rank: int, baselines=('always_write', 'no_memory')) -> Path:
    """The --quick settings, written out so the batches can be set (--quick fixes cnn_batch)."""
    cfg = {k: plain(v) for k, v in QUICK.items() if k != 'training'}
    cfg['training'] = {k: plain(v) for k, v in QUICK['training'].items()}
    cfg['data'] = {k: plain(v) for k, v in QUICK_DATA.items()}
    cfg['cnn_batch'] = 16 * per_rank
    cfg['training']['batch'] = 2 * per_rank
    cfg['baselines'] = list(baselines)
    path.write_text(yaml.safe_dump(cfg))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def torchrun(args: list, ranks: int = 2, rdzv: bool = False) -> subprocess.CompletedProcess:
    """`torchrun -m aura_ros train ARGS` on loopback; `rdzv`: the c10d rendezvous that runs on
    several machines use (--nnodes, --rdzv-endpoint), here with one node."""
    env = {**os.environ, 'MASTER_ADDR': '127.0.0.1', 'GLOO_SOCKET_IFNAME': 'lo',
           'OMP_NUM_THREADS': '1'}
    where = ['--nnodes', '1', '--rdzv-backend', 'c10d', '--rdzv-endpoint',
             f'127.0.0.1:{free_port()}'] if rdzv else \
        ['--master_addr', '127.0.0.1', '--master_port', str(free_port())]
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', str(ranks),
           *where, '-m', 'aura_ros', 'train', *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def state(out: Path) -> dict:
    return json.loads((out / 'checkpoints' / 'state.json').read_text())


def assert_same_losses(one: dict, two: dict, methods) -> None:
    steps = list(zip(one['backbone']['history'], two['backbone']['history'], strict=True))
    assert steps
    for a, b in steps:
        assert b == pytest.approx(a, rel=RTOL)
    for method in methods:
        for phase in ('warmup', 'gate', 'carry'):
            a = one['histories'][method]['phases'][phase]
            b = two['histories'][method]['phases'][phase]
            assert len(a) == len(b) > 0
            for ra, rb in zip(a, b, strict=True):
                assert rb == pytest.approx(ra, rel=RTOL, abs=1e-9), (method, phase)


@pytest.fixture(scope='module')
def bags(tmp_path_factory):
    from aura_ros.data.synthetic import write_bags

    return write_bags(tmp_path_factory.mktemp('dist') / 'bags', cues=(0, 1, 2), storage='mcap',
                      seconds=2.5)


@pytest.fixture(scope='module')
def one_process(bags, tmp_path_factory):
    """A plain one-process run with batch 2B, in this process, as `python -m aura_ros train`."""
    from aura_ros.cli import main

    root = tmp_path_factory.mktemp('one')
    out = root / 'model'
    assert main(['train', '--data', str(bags), '--out', str(out), '--config',
                 str(write_config(root / 'b.yaml', per_rank=2)), *TOPICS]) == 0
    return out


def test_a_plain_train_stays_one_process(one_process):
    assert not dist.is_initialized()
    report = json.loads((one_process / 'report.json').read_text())
    assert report['ranks'] == 1 and report['command'].startswith('python -m aura_ros train')


def test_two_ranks_train_like_one_process_with_twice_the_batch(bags, one_process, tmp_path):
    out = tmp_path / 'model'
    torchrun(['--data', str(bags), '--out', str(out), '--config',
              str(write_config(tmp_path / 'b.yaml', per_rank=1)), *TOPICS])
    assert_same_losses(state(one_process), state(out), ('aura', 'always_write', 'no_memory'))
    report = json.loads((out / 'report.json').read_text())
    assert report['ranks'] == 2 and report['command'].startswith('torchrun (2 ranks) -m aura_ros')
    one = json.loads((one_process / 'report.json').read_text())
    assert report['threshold'] == one['threshold']
    for method, result in one['held_out'].items():
        assert report['held_out'][method]['action_error'] == pytest.approx(
            result['action_error'], rel=1e-4)
    assert (out / 'MODEL_CARD.md').is_file()
    assert (out / 'baselines/no_memory.safetensors').is_file()


def test_a_distributed_run_resumes(bags, one_process, tmp_path):
    """Stopped after AURA and always-write (here: trained without no_memory), resumed on 2 ranks
    with it added: only no_memory trains, from the saved features, as in one process."""
    out = tmp_path / 'model'
    torchrun(['--data', str(bags), '--out', str(out), '--config',
              str(write_config(tmp_path / 'b.yaml', per_rank=1, baselines=('always_write',))),
              *TOPICS])
    before = state(out)
    assert 'no_memory' not in before['histories']
    done = torchrun(['--data', str(bags), '--out', str(out), '--resume', '--config',
                     str(write_config(tmp_path / 'b.yaml', per_rank=1)), *TOPICS], rdzv=True)
    assert 'no_memory: training' in done.stdout and 'aura: training' not in done.stdout
    after = state(out)
    assert after['histories']['aura'] == before['histories']['aura']
    assert_same_losses(state(one_process), after, ('aura', 'always_write', 'no_memory'))
    assert 'no_memory' in json.loads((out / 'report.json').read_text())['held_out']


def test_a_hinted_gate_trains_alike_on_two_ranks(tmp_path):
    """gate_target: hint (teacher writes, the gate's balanced cross-entropy) on 2 ranks with
    batch B as in one process with 2B: the class balance is the global batch's. The 2 ranks
    run first, on bags never loaded: rank 0 builds the decode cache, rank 1 maps it."""
    from aura_ros.cli import main
    from aura_ros.data.synthetic import write_bags

    bags = write_bags(tmp_path / 'bags', cues=(0, 1, 2), storage='mcap', seconds=2.5,
                      hints=True)
    hinted = {'data': {'hint_topic': '/marker', 'hint_frames': 3},
              'training': {'gate_target': 'hint'}}
    outs = []
    for per_rank in (1, 2):
        config = write_config(tmp_path / f'b{per_rank}.yaml', per_rank, baselines=())
        cfg = yaml.safe_load(config.read_text())
        cfg['data'].update(hinted['data'])
        cfg['training'].update(hinted['training'])
        config.write_text(yaml.safe_dump(cfg))
        out = tmp_path / f'model{per_rank}'
        args = ['--data', str(bags), '--out', str(out), '--config', str(config), *TOPICS[:2]]
        if per_rank == 2:
            assert main(['train', *args]) == 0
        else:
            torchrun(args)
        outs.append(state(out))
    two, one = outs
    assert one['histories']['aura']['phases']['gate'][0]['hint'] > 0
    assert_same_losses(one, two, ('aura',))


def test_backend_follows_the_device():
    assert distributed.backend_for('cpu') == 'gloo'
    assert distributed.backend_for('cuda:1') == 'nccl'


def test_without_torchrun_nothing_is_initialised(monkeypatch):
    monkeypatch.delenv('WORLD_SIZE', raising=False)
    calls = []
    with distributed.session():
        assert distributed.main_first(lambda: calls.append(1) or 'x') == 'x'
        assert not dist.is_initialized() and distributed.world() == 1
    assert calls == [1]
