"""aura_node over DDS: a write that would make the memory NaN/Inf is discarded, counted, survived.

The live node's memory layer is made to overflow mid-episode (real weights, no mock): the node
keeps publishing chunks (finite), keeps the last good state bit for bit, reports the discard on
the gate topic and counts it on /diagnostics apart from input rejections.
"""

import numpy as np
import pytest

pytest.importorskip('rclpy', reason='rclpy not installed (pip install .[ros])')

from test_node import FRAMES, Rig, gate_values  # noqa: E402
from test_runtime_nonfinite import blow_up  # noqa: E402


def test_a_nonfinite_state_is_discarded_counted_and_the_node_carries_on(
        make_node, executor, wait_for, tiny_model_dir):
    rig = Rig(make_node, executor, wait_for, tiny_model_dir, gate_threshold=0.0)
    try:
        for pixels in FRAMES[:3]:
            assert gate_values(rig.step(pixels)[1])['wrote'] == '1'
        rig.settle()
        good = rig.state()
        layer = rig.node.runtime.memory.layer
        saved = {k: v.clone() for k, v in layer.state_dict().items()}
        blow_up(layer)                                 # worker idle: the next write overflows
        for pixels in FRAMES[3:5]:
            chunk, gate = rig.step(pixels)
            values = gate_values(gate)
            assert (values['wrote'], values['discarded']) == ('0', '1')
            assert np.isfinite([p.positions for p in chunk.points]).all()
            for key, value in rig.state().items():
                assert np.array_equal(value, good[key]), key
        layer.load_state_dict(saved)
        values = gate_values(rig.step(FRAMES[5])[1])
        assert (values['wrote'], values['discarded'], values['step']) == ('1', '0', '6')
        health = rig.node.health()
        assert health['nonfinite_state_discarded'] == 2
        assert health['frames_rejected'] == 0 and not rig.node.rejected
        rig.wait_for(lambda: any(kv.key == 'nonfinite_state_discarded' and kv.value == '2'
                                 for m in rig.health for s in m.status for kv in s.values),
                     5, rig.executor, '/diagnostics with the discard count')
    finally:
        rig.close()
