"""The crash-resume policy without ROS: what is resumed, refused, set aside and saved, per row."""

import shutil

import numpy as np
import pytest

from aura_ros.runtime import AuraRuntime
from aura_ros.runtime.crash_resume import CrashResume, CrashResumeRefused
from aura_ros.runtime.state_file import model_fingerprint, save_snapshot

pytestmark = pytest.mark.usefixtures('one_torch_thread')


class Log:
    """Collects what the policy says, as a node's logger would print it."""

    def __init__(self):
        self.lines = []

    def info(self, message):
        self.lines.append(('info', message))

    def warning(self, message):
        self.lines.append(('warning', message))


@pytest.fixture(scope='module')
def fleet(tiny_model_dir):
    rt = AuraRuntime.from_model_dir(tiny_model_dir, device='cpu', engine='torch', robots=3)
    rng = np.random.default_rng(0)
    spec = rt.spec
    for _ in range(4):
        rt.step_rows({row: ({c.name: (rng.integers(0, 256, (c.height, c.width, 3), np.uint8),
                                      'rgb8') for c in spec.cameras},
                            rng.normal(size=spec.n_joints)) for row in range(3)})
    return rt


def test_each_robot_resumes_its_own_row_and_a_corrupt_one_loses_only_itself(
        fleet, tiny_model_dir, tmp_path):
    fingerprint = model_fingerprint(tiny_model_dir)
    paths = [tmp_path / f'arm{row}.state' for row in range(3)]
    for row, path in enumerate(paths):
        counters = fleet.counters[row]
        save_snapshot(path, fleet.state_dict(row), fingerprint, counters.steps, counters.writes)
    paths[1].write_bytes(paths[1].read_bytes()[:-8] + b'\0' * 8)      # row 1 corrupt
    fresh = AuraRuntime.from_model_dir(tiny_model_dir, device='cpu', engine='torch', robots=3)
    logs = [Log() for _ in paths]
    policies = [CrashResume(str(path), log, row=row)
                for row, (path, log) in enumerate(zip(paths, logs, strict=True))]
    for policy in policies:
        policy.open(fresh, fingerprint)
    for row in (0, 2):
        assert all(np.array_equal(fresh.state_dict(row)[k], fleet.state_dict(row)[k])
                   for k in ('W', 'b'))
        assert fresh.counters[row].steps == fleet.counters[row].steps == 4
    assert not fresh.state_dict(1)['W'].any() and fresh.counters[1].steps == 0
    assert any('checksum mismatch' in text and 'kept aside' in text for _, text in logs[1].lines)
    assert list(tmp_path.glob('arm1.state.rejected-*'))
    assert [p.status for p in policies] == ['on'] * 3
    for policy in policies:
        policy.release()


def test_saves_are_counted_and_a_failed_save_is_reported(fleet, tiny_model_dir, tmp_path):
    folder = tmp_path / 'states'
    folder.mkdir()
    policy = CrashResume(str(folder / 'arm.state'), Log(), row=2)
    policy.open(fleet, model_fingerprint(tiny_model_dir))
    assert any('starting fresh' in text for _, text in policy.log.lines)
    assert policy.save(fleet) is None and policy.saves == 1 and policy.bytes_written > 0
    shutil.rmtree(folder)
    assert isinstance(policy.save(fleet), OSError)
    assert policy.values() == {'state_saves': 1, 'state_bytes_written': policy.bytes_written,
                               'state_save_failures': 1}
    policy.release()
    assert policy.status == 'off' and policy.save(fleet) is None


def test_a_users_file_and_a_second_holder_are_refused(fleet, tiny_model_dir, tmp_path):
    users = tmp_path / 'notes.txt'
    users.write_text('mine')
    with pytest.raises(CrashResumeRefused, match='not an aura_ros state file'):
        CrashResume(str(users), Log()).open(fleet, model_fingerprint(tiny_model_dir))
    assert users.read_text() == 'mine'
    first = CrashResume(str(tmp_path / 'arm.state'), Log(), row=0)
    first.open(fleet, model_fingerprint(tiny_model_dir))
    with pytest.raises(CrashResumeRefused, match='in use'):
        CrashResume(str(tmp_path / 'arm.state'), Log(), row=1).open(
            fleet, model_fingerprint(tiny_model_dir))
    first.release()
