"""aura_node's health bookkeeping: throttles per key, problems only within their window."""

import time

from aura_ros.ros.health import RecentProblems, Throttle


def test_throttle_is_per_key():
    throttle = Throttle(60.0)
    assert throttle.ready('stale_image') and throttle.ready('encoding')
    assert not throttle.ready('stale_image') and not throttle.ready('encoding')


def test_recent_problems_forget_after_the_window():
    problems = RecentProblems(0.3)
    for _ in range(3):
        problems.add('stale_image')
    problems.add('dropped')
    assert problems.counts() == {'stale_image': 3, 'dropped': 1}
    time.sleep(0.5)
    assert problems.counts() == {}
    problems.add('encoding')
    assert problems.counts() == {'encoding': 1}
