"""The decode cache: a second load maps the cache and decodes nothing; changes make a new entry."""

import os

import numpy as np
import pytest

from aura_ros.data import DataConfig, load
from aura_ros.data.cache import default_cache_dir
from aura_ros.data.load import cache_entry, load_demonstrations
from aura_ros.data.synthetic import write_bag, write_lerobot_dataset


@pytest.fixture
def count_reads(monkeypatch):
    """Counts calls of the real readers (they still run): decoding happens only inside them."""
    calls = {'bag': 0, 'lerobot': 0}
    real_bag, real_lerobot = load.read_bag, load.read_lerobot

    def bag(*args, **kwargs):
        calls['bag'] += 1
        return real_bag(*args, **kwargs)

    def lerobot(*args, **kwargs):
        calls['lerobot'] += 1
        return real_lerobot(*args, **kwargs)

    monkeypatch.setattr(load, 'read_bag', bag)
    monkeypatch.setattr(load, 'read_lerobot', lerobot)
    return calls


def same(a, b):
    assert a.source == b.source and a.cameras == b.cameras and a.joint_names == b.joint_names
    assert len(a.episodes) == len(b.episodes)
    for x, y in zip(a.episodes, b.episodes, strict=True):
        np.testing.assert_array_equal(x.stamps, y.stamps)
        np.testing.assert_array_equal(x.joints, y.joints)
        np.testing.assert_array_equal(x.actions, y.actions)
        for cam in x.images:
            np.testing.assert_array_equal(x.images[cam], y.images[cam])


def test_second_load_reads_the_cache_only(tmp_path, count_reads):
    bag = write_bag(tmp_path / 'bag', command='joint_state')
    first = load_demonstrations(bag, progress=False)
    assert count_reads['bag'] == 1
    entry = cache_entry(bag, DataConfig())
    assert entry.parent == bag / '.aura_cache' and (entry / 'manifest.json').is_file()
    second = load_demonstrations(bag, progress=False)
    assert count_reads['bag'] == 1, 'the second load decoded the bag again'
    same(first, second)
    assert isinstance(second.episodes[0].images['image'], np.memmap)
    assert second.report['cache'] == str(entry)
    assert not list(entry.parent.glob('*.tmp-*')) and not list(entry.parent.glob('*.spool*'))


def test_lerobot_second_load_reads_the_cache_only(tmp_path, count_reads):
    root = write_lerobot_dataset(tmp_path / 'ds', cues=(0,), seconds=0.5)
    first = load_demonstrations(root, progress=False)
    second = load_demonstrations(root, progress=False)
    assert count_reads['lerobot'] == 1
    same(first, second)
    assert (root / '.aura_cache').is_dir()


def test_config_or_source_change_makes_a_new_entry(tmp_path, count_reads):
    bag = write_bag(tmp_path / 'bag', command='joint_state')
    config = DataConfig(cache_dir=str(tmp_path / 'cache'))
    a = load_demonstrations(bag, config, progress=False)
    b = load_demonstrations(bag, DataConfig(cache_dir=str(tmp_path / 'cache'), chunk=4),
                            progress=False)
    assert count_reads['bag'] == 2 and a.chunk == 8 and b.chunk == 4
    # where the cache lives is not part of the key
    assert cache_entry(bag, config).name == cache_entry(bag, DataConfig()).name
    mcap = next(bag.glob('*.mcap'))
    stat = mcap.stat()
    os.utime(mcap, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    load_demonstrations(bag, config, progress=False)
    assert count_reads['bag'] == 3
    assert len(list((tmp_path / 'cache').iterdir())) == 3
    load_demonstrations(bag, config, progress=False, rebuild=True)
    assert count_reads['bag'] == 4


@pytest.mark.skipif(os.geteuid() == 0, reason='root can write into read-only folders')
def test_read_only_source_caches_in_home(tmp_path, monkeypatch):
    bag = write_bag(tmp_path / 'bag', command='joint_state')
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'home_cache'))
    bag.chmod(0o555)
    try:
        assert default_cache_dir(bag) == tmp_path / 'home_cache' / 'aura_ros'
        demos = load_demonstrations(bag, progress=False)
        assert demos.report['cache'].startswith(str(tmp_path / 'home_cache' / 'aura_ros'))
    finally:
        bag.chmod(0o755)


def test_default_cache_dir_next_to_a_file_source(tmp_path):
    bag = write_bag(tmp_path / 'bag')
    mcap = next(bag.glob('*.mcap'))
    assert default_cache_dir(mcap) == bag.resolve() / '.aura_cache'
    assert default_cache_dir(bag) == bag.resolve() / '.aura_cache'


def test_inspect_command(tmp_path, capsys):
    from aura_ros.data.__main__ import main

    bag = write_bag(tmp_path / 'bag', command='joint_state')
    (tmp_path / 'data.yaml').write_text(f'chunk: 4\ncache_dir: {tmp_path / "cache"}\n')
    assert main([str(bag), '--config', str(tmp_path / 'data.yaml')]) == 0
    out = capsys.readouterr().out
    assert 'episodes:      1 (87 frames; bag: 87)' in out
    assert 'dropped_after_last_command: 4' in out
    (tmp_path / 'bad.yaml').write_text('chunk: 4\nfps: 30\n')
    assert main([str(bag), '--config', str(tmp_path / 'bad.yaml')]) == 1
    assert 'unknown key(s): fps' in capsys.readouterr().err
    assert main([str(tmp_path / 'nothing')]) == 1
