"""Memory-state snapshots: exact round trip, and every bad file refused, kept aside, never lost."""

import numpy as np
import pytest

from aura_ros.runtime.state_file import (
    StateFileError,
    is_snapshot,
    model_fingerprint,
    probe_writable,
    read_snapshot,
    save_snapshot,
    set_aside,
)

SHAPES = {'W': (1, 8, 8), 'b': (1, 8)}


@pytest.fixture
def state():
    rng = np.random.default_rng(0)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}


def test_round_trip_is_exact_and_atomic(tmp_path, state):
    path = tmp_path / 'aura.state'
    written = save_snapshot(path, state, 'f' * 64, steps=120, writes=9)
    assert written == path.stat().st_size
    assert [p.name for p in tmp_path.iterdir()] == ['aura.state']     # no temp file left
    snap = read_snapshot(path, 'f' * 64, SHAPES)
    assert (snap.steps, snap.writes) == (120, 9)
    for key in SHAPES:
        assert np.array_equal(snap.state[key], state[key])


def test_foreign_model_is_refused(tmp_path, state):
    path = tmp_path / 'aura.state'
    save_snapshot(path, state, 'a' * 64, 1, 1)
    with pytest.raises(StateFileError, match='another model'):
        read_snapshot(path, 'b' * 64, SHAPES)


def test_truncated_and_corrupt_files_are_refused(tmp_path, state):
    path = tmp_path / 'aura.state'
    save_snapshot(path, state, 'f' * 64, 1, 1)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(StateFileError, match='unreadable'):
        read_snapshot(path, 'f' * 64, SHAPES)
    flipped = bytearray(data)
    flipped[-3] ^= 0xFF                     # inside the tensor bytes
    path.write_bytes(bytes(flipped))
    with pytest.raises(StateFileError, match='checksum'):
        read_snapshot(path, 'f' * 64, SHAPES)


def test_wrong_shapes_are_refused(tmp_path, state):
    path = tmp_path / 'aura.state'
    save_snapshot(path, state, 'f' * 64, 1, 1)
    with pytest.raises(StateFileError, match='shapes'):
        read_snapshot(path, 'f' * 64, {'W': (1, 4, 4), 'b': (1, 4)})


def test_set_aside_keeps_the_file(tmp_path, state):
    path = tmp_path / 'aura.state'
    save_snapshot(path, state, 'f' * 64, 1, 1)
    truncated = path.read_bytes()[:300]     # past the metadata (its key order varies by run)
    path.write_bytes(truncated)
    assert is_snapshot(path)
    aside = set_aside(path)
    assert not path.exists() and aside.read_bytes() == truncated
    assert aside.name.startswith('aura.state.rejected-')


@pytest.mark.parametrize('content', [b'junk', b'', b'{"__metadata__": {}}' * 3, None])
def test_only_a_snapshot_is_ever_set_aside(tmp_path, content):
    """#15 row 1: a user's file or folder at the state_file path is never moved."""
    path = tmp_path / 'aura.state'
    if content is None:
        path.mkdir()
        (path / 'keep').write_text('mine')
    else:
        path.write_bytes(content)
    assert not is_snapshot(path)
    with pytest.raises(StateFileError, match='not an aura_ros state file'):
        set_aside(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['aura.state']


def test_a_failed_save_leaves_no_temp_file(tmp_path, state):
    """#15 row 8: the rename fails (a folder is in the way); the temp file must not stay."""
    path = tmp_path / 'aura.state'
    path.mkdir()
    (path / 'x').write_text('occupied')
    with pytest.raises(OSError):
        save_snapshot(path, state, 'f' * 64, 1, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['aura.state']


def test_probe_writable_tells_a_missing_folder(tmp_path):
    assert probe_writable(tmp_path) is None
    assert list(tmp_path.iterdir()) == []                # the probe cleans up after itself
    assert isinstance(probe_writable(tmp_path / 'missing'), FileNotFoundError)


def test_fingerprint_changes_with_the_model(tiny_model_dir, tmp_path):
    import shutil
    copy = tmp_path / 'model'
    shutil.copytree(tiny_model_dir, copy)
    assert model_fingerprint(copy) == model_fingerprint(tiny_model_dir)
    data = bytearray((copy / 'memory.safetensors').read_bytes())
    data[-1] ^= 1
    (copy / 'memory.safetensors').write_bytes(bytes(data))
    assert model_fingerprint(copy) != model_fingerprint(tiny_model_dir)
