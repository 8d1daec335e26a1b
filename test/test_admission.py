"""Stamp admission before the memory state (issue 23 row 2): an observation too old for any point
of its chunk to be published is refused by its own reason, with the figures that explain it."""

import pytest

from aura_ros.runtime import InputError
from aura_ros.runtime.admission import Admission

SO101 = Admission(max_age_s=0.5, period_s=1 / 30, points=8, min_lead_s=0.03)


def reason(admission, age):
    with pytest.raises(InputError) as err:
        admission.check(age, step_s=0.003)
    return err.value


def test_a_frame_older_than_its_chunk_is_refused_as_stale_for_chunk():
    # the finding: stamps 0.42-0.45 s behind the clock against 8 x 33 ms
    for age in (0.42, 0.45):
        err = reason(SO101, age)
        assert err.reason == 'stale_for_chunk'
        for figure in (f'{age:.3f} s old', '0.267 s', '8 x 33.3 ms', '0.03 s', '3.0 ms'):
            assert figure in str(err)
    SO101.check(0.2)                                   # a point 0.067 s ahead is left


def test_the_usable_age_is_the_smaller_of_the_two_limits():
    assert SO101.usable_age_s == pytest.approx(8 / 30 - 0.03)
    long_chunk = Admission(0.5, 0.25, 3, 0.03)
    assert long_chunk.usable_age_s == 0.5
    assert reason(long_chunk, 0.6).reason == 'stale_image'
    assert reason(long_chunk, -0.6).reason == 'future_image'
    long_chunk.check(0.49)


def step_reason(stamp, last=-float('inf'), joint_stamp=0.9, needs_joints=True, now=1.0):
    with pytest.raises(InputError) as err:
        SO101.check_step(stamp, now, last, joint_stamp, needs_joints)
    return err.value.reason


def test_a_step_is_refused_out_of_order_without_joints_or_with_stale_joints():
    SO101.check_step(0.95, 1.0, 0.9, 0.9, True)                     # admitted
    assert step_reason(0.95, last=0.95) == 'out_of_order'
    assert step_reason(0.95, joint_stamp=None) == 'no_joints'
    SO101.check_step(0.95, 1.0, 0.9, None, False)                   # a model without joints
    assert step_reason(0.95, joint_stamp=0.4) == 'stale_joints'
    assert step_reason(0.65, last=0.7) == 'stale_for_chunk'         # the age comes first


def test_a_joint_state_from_the_future_is_refused():
    SO101.check_joint_state(0.5)
    with pytest.raises(InputError, match='0.600 s in the future') as err:
        SO101.check_joint_state(0.6)
    assert err.value.reason == 'future_joints'
