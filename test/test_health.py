"""aura_node's health bookkeeping: throttles per key, problems only within their window."""

import time

from aura_ros.ros.health import DeliveryLedger, RecentProblems, Throttle


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


def info(sequence, publisher=b'pub-1'):
    return {'publication_sequence_number': sequence, 'publisher_gid': {'data': publisher}}


def test_delivery_gaps_are_lost_in_transport_unless_the_node_was_not_taking():
    ledger = DeliveryLedger(stall_s=60.0)
    assert ledger.take('image', info(1)) == (True, 0)
    assert ledger.take('image', info(4)) == (True, 2)          # 2 and 3 lost on the way
    assert ledger.take('image', info(4)) == (False, 0)         # a second copy of 4
    assert ledger.take('image', info(2, b'pub-2')) == (True, 0)   # another publisher's own count
    ledger.pause()                                             # inactive, or a reset held us
    assert ledger.take('image', info(7)) == (True, 0)
    assert (ledger.lost_in_transport, ledger.missed_by_node) == (2, 2)
    assert ledger.take('joint_states', info(1)) == (True, 0)
    assert ledger.take('joint_states', info(9), count_loss=False) == (True, 0)
    assert ledger.take('image', {}) == (True, 0)               # no sequence numbers: fresh
    assert (ledger.lost_in_transport, ledger.missed_by_node) == (2, 2)


def test_a_stalled_executor_makes_the_gap_the_nodes_own():
    ledger = DeliveryLedger(stall_s=0.05)
    ledger.take('image', info(1))
    time.sleep(0.1)
    assert ledger.take('image', info(5)) == (True, 0)
    assert (ledger.lost_in_transport, ledger.missed_by_node) == (0, 3)
    epoch = ledger.epoch
    time.sleep(0.1)
    ledger.executor_ran()                                      # the health timer saw the stall
    assert ledger.epoch == epoch + 1
