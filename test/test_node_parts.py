"""aura_node's parts that need no DDS: the problem log, a robot's crash-resume save, the check of
a parameter change at run time, and the runtime's warm-up at configure."""

import logging
import shutil

import numpy as np
import pytest
from rclpy.parameter import Parameter

from aura_ros.ros.health import ProblemLog
from aura_ros.ros.params import run_time_refusal
from aura_ros.ros.robot import Robot
from aura_ros.runtime import AuraRuntime, InputError
from aura_ros.runtime.state_file import model_fingerprint

pytestmark = pytest.mark.usefixtures('one_torch_thread')
LOG = logging.getLogger('aura_test_node_parts')


def test_the_problem_log_counts_every_report_and_warns_once_per_key(caplog):
    problems = ProblemLog(LOG, throttle_s=60.0, window_s=60.0)
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        for _ in range(3):
            problems.report('chunk_expired', lambda: 'a chunk expired')
        problems.report('incompatible_qos', lambda: 'on /a', key='incompatible_qos /a')
        problems.report('incompatible_qos', lambda: 'on /b', key='incompatible_qos /b')
    assert problems.recent.counts() == {'chunk_expired': 3, 'incompatible_qos': 2}
    assert [r.getMessage() for r in caplog.records] == ['a chunk expired', 'on /a', 'on /b']


def test_a_rejection_counts_for_its_robot_and_its_warning_is_cut(caplog):
    problems = ProblemLog(LOG, throttle_s=60.0, window_s=60.0)
    arm = Robot('arm1', 0, 'aura', '', LOG)
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        problems.reject(arm, InputError('encoding', 'x' * 1000), image=True)
        problems.reject(arm, InputError('encoding', 'again'), image=True)      # throttled
        problems.reject(arm, InputError('stale_joints', 'old'), image=False)
    assert arm.counters.rejected == {'encoding': 2, 'stale_joints': 1}
    assert (arm.counters.images_rejected, arm.counters.joint_states_rejected) == (2, 1)
    assert arm.problems.counts() == problems.recent.counts() == {'encoding': 2,
                                                                  'stale_joints': 1}
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and lines[1] == 'arm1: rejected joint state (stale_joints): old'
    assert lines[0].startswith('arm1: rejected image (encoding): xxx')
    assert lines[0].endswith('... (1000 chars)') and len(lines[0]) < 500


def test_only_the_gate_threshold_changes_at_run_time_and_only_to_a_threshold():
    double = Parameter.Type.DOUBLE
    assert run_time_refusal([Parameter('gate_threshold', double, 0.4)]) == ''
    assert run_time_refusal([Parameter('gate_threshold', double, -1.0)]) == ''  # the model's
    assert run_time_refusal([Parameter('device', Parameter.Type.STRING, 'cpu')]) == \
        'device is read-only at run time'
    assert run_time_refusal([Parameter('gate_threshold', double, 1 + 1e-6)]).startswith(
        'gate_threshold: ')


def test_robots_change_only_while_unconfigured_and_only_to_robot_names():
    robots = Parameter('robots', Parameter.Type.STRING_ARRAY, ['arm2', 'arm3'])
    assert run_time_refusal([robots], 'unconfigured') == ''
    for state in ('active', 'inactive'):
        assert run_time_refusal([robots], state).startswith(
            f'robots can change only while the node is unconfigured (it is {state}): '
            'deactivate and cleanup first')
    assert 'names a robot twice' in run_time_refusal(
        [Parameter('robots', Parameter.Type.STRING_ARRAY, ['arm2', 'arm2'])], 'unconfigured')
    assert 'not robot names' in run_time_refusal(
        [Parameter('robots', Parameter.Type.STRING_ARRAY, ['2arm'])], 'unconfigured')
    assert run_time_refusal([Parameter('device', Parameter.Type.STRING, 'cpu')],
                            'unconfigured') == 'device is read-only at run time'


def test_a_robot_saves_its_row_and_a_failed_save_is_a_problem(tiny_model_dir, tmp_path):
    runtime = AuraRuntime.from_model_dir(tiny_model_dir, device='cpu', robots=2)
    folder = tmp_path / 'states'
    folder.mkdir()
    problems = ProblemLog(LOG, throttle_s=60.0, window_s=60.0)
    arm = Robot('arm2', 1, 'aura', str(folder / 'state.safetensors'), LOG)
    arm.crash.open(runtime, model_fingerprint(tiny_model_dir))
    arm.save_state(runtime, problems)
    assert (folder / 'state.arm2.safetensors').is_file() and arm.crash.saves == 1
    shutil.rmtree(folder)
    arm.save_state(runtime, problems)
    assert arm.crash.save_failures == 1 and problems.recent.counts() == {'state_save_failed': 1}
    arm.crash.release()
    Robot('', 0, 'aura', '', LOG).save_state(runtime, problems)    # no state_file: nothing


def test_the_warm_up_leaves_no_trace(tiny_model_dir):
    """After the warm-up every row's state and counters are fresh: the first real step gives
    what it gives on a runtime that was never warmed up."""
    warmed, fresh = (AuraRuntime.from_model_dir(tiny_model_dir, device='cpu', robots=2)
                     for _ in range(2))
    before = warmed.state_dict()
    warmed.warm_up()
    for name, value in warmed.state_dict().items():
        np.testing.assert_array_equal(value, before[name])
    assert [c.steps for c in warmed.counters] == [0, 0]
    rng = np.random.default_rng(3)
    spec = warmed.spec
    observation = {row: ({c.name: (rng.integers(0, 256, (c.height, c.width, 3), np.uint8),
                                   'rgb8') for c in spec.cameras},
                         rng.normal(size=spec.n_joints)) for row in range(2)}
    a, b = warmed.step_rows(observation), fresh.step_rows(observation)
    for row in range(2):
        np.testing.assert_allclose(a[row].action, b[row].action, rtol=1e-5, atol=1e-6)
        assert (a[row].gate.step, a[row].gate.wrote) == (b[row].gate.step, b[row].gate.wrote)
