"""The gate picture: the renderer alone, `~/gate_image` / `~/gate_values` of a live node over
DDS, the Foxglove layout shipped in config/, and `python -m aura_ros gate-report BAG`."""

import json
import time
from pathlib import Path

import numpy as np
import pytest

from aura_ros.runtime.gate_view import WRITE, GateView

REPO = Path(__file__).resolve().parents[1]
LAYOUT = REPO / 'config' / 'foxglove_gate.json'


def tick_at(picture: np.ndarray, view: GateView, x: int) -> bool:
    """The write tick centred on column x (its apex row and the row above)."""
    top = view.p_rows[0]
    return bool(np.all(picture[top - 3, x - 1:x + 2] == WRITE)
                and np.all(picture[top - 2, x] == WRITE))


def chart_has_writes(picture: np.ndarray, view: GateView) -> bool:
    """Any write colour between the tick row and the step axis (the legend is above)."""
    top = view.p_rows[0]
    rows = picture[top - 6: top + 120 + 6 + 44]
    return bool(np.any(np.all(rows == WRITE, axis=2)))


# -- the renderer, no ROS --

def test_render_marks_each_write_at_its_step_and_shows_its_frame():
    view = GateView(steps=50, thumbnails=2, width=400)
    frame = np.zeros((24, 32, 3), np.uint8)
    frame[:, :, 0] = 255                                       # bgr8: blue first
    for step in range(1, 41):
        view.record(step, 0.9 if step == 17 else 0.1, 0.5, 1.0, step == 17, int(step >= 17),
                    (frame, 'bgr8'))
    picture = view.render()
    assert picture.shape == (view.height, 400, 3) and picture.dtype == np.uint8
    assert view.renders == 1
    assert tick_at(picture, view, view.step_x(17))
    assert not tick_at(picture, view, view.step_x(16)) and not tick_at(picture, view,
                                                                       view.step_x(30))
    # the thumbnail of the written frame: blue (bgr8 decoded), below the chart
    below = picture[view.height - view.thumb_size[1]:]
    assert np.any(np.all(below == (0, 0, 255), axis=2))


def test_a_run_of_writes_is_one_thumbnail():
    view = GateView(steps=50, thumbnails=3)
    frames = {step: (np.full((8, 8, 3), step, np.uint8), 'rgb8') for step in range(1, 31)}
    for step in range(1, 31):
        wrote = step in (10, 11, 12, 20)
        view.record(step, 0.9 if wrote else 0.1, 0.5, 1.0, wrote, 0, frames[step])
    assert [(f.step, f.last) for f in view.written] == [(10, 12), (20, 20)]
    assert view.written[0].pixels[0, 0, 0] == 10                # the run's first frame
    picture = view.render()
    for step in (10, 11, 12, 20):
        assert tick_at(picture, view, view.step_x(step))


def test_render_without_writes_has_no_marks_and_reset_clears():
    view = GateView(steps=20, thumbnails=0)
    for step in range(1, 30):
        view.record(step, 0.2, 0.5, float('nan') if step == 5 else 0.3, False, 0)
    picture = view.render()
    assert not chart_has_writes(picture, view)
    view.clear()
    assert view.render().shape == picture.shape and not view.samples


def test_bad_sizes_are_refused_by_name():
    with pytest.raises(ValueError, match='steps >= 2'):
        GateView(steps=1)


# -- the Foxglove layout --

def layout_leaves(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    assert set(node) <= {'first', 'second', 'direction', 'splitPercentage'}, node
    assert node['direction'] in ('row', 'column')
    assert 0 <= node.get('splitPercentage', 50) <= 100
    return layout_leaves(node['first']) + layout_leaves(node['second'])


def layout_topics(layout: dict) -> dict[str, set]:
    """Panel type -> topics its configuration names (the message paths' topic part)."""
    found: dict[str, set] = {}
    for panel_id, config in layout['configById'].items():
        kind = panel_id.split('!')[0]
        topics = found.setdefault(kind, set())
        if 'imageMode' in config:
            topics.add(config['imageMode']['imageTopic'])
        if 'topicToRender' in config:
            topics.add(config['topicToRender'])
        for path in config.get('paths', []):
            topics.add(path['value'].split('.')[0])
    return found


def check_layout(layout: dict) -> None:
    """The shape of a Foxglove layout file (what the app's import expects)."""
    assert set(layout) >= {'configById', 'layout'}
    assert isinstance(layout['configById'], dict) and layout['configById']
    for panel_id, config in layout['configById'].items():
        kind, _, suffix = panel_id.partition('!')
        assert kind and suffix and isinstance(config, dict), panel_id
    assert sorted(layout_leaves(layout['layout'])) == sorted(layout['configById'])


def test_foxglove_layout_is_a_layout_with_the_three_panels():
    layout = json.loads(LAYOUT.read_text())
    check_layout(layout)
    topics = layout_topics(layout)
    assert topics['Image'] == {'/aura/gate_image'}
    assert topics['Plot'] == {'/aura/gate_values'}
    assert topics['DiagnosticSummary'] == {'/diagnostics'}
    from aura_ros.ros.gate_topics import GATE_VALUES

    plotted = {p['value'] for p in layout['configById']['Plot!aura_gate']['paths']}
    assert f'/aura/gate_values.data[{GATE_VALUES.index("p")}]' in plotted
    assert f'/aura/gate_values.data[{GATE_VALUES.index("wrote")}]' in plotted


def test_plotjuggler_layout_plots_p_and_writes_from_gate_values():
    import xml.etree.ElementTree as ET

    from aura_ros.ros.gate_topics import GATE_VALUES

    root = ET.parse(REPO / 'config' / 'plotjuggler_gate.xml').getroot()
    curves = [c.get('name') for c in root.iter('curve')]
    assert curves and all(c.startswith('/aura/gate_values/data[') for c in curves)
    for name in ('p', 'wrote'):
        assert f'/aura/gate_values/data[{GATE_VALUES.index(name)}]' in curves
    assert [t.get('name') for t in root.iter('topic')] == ['/aura/gate_values']


def test_layout_check_catches_a_broken_layout():
    layout = json.loads(LAYOUT.read_text())
    layout['layout']['second']['first'] = 'Plot!missing'
    with pytest.raises(AssertionError):
        check_layout(layout)


# -- the live node over DDS --

rclpy = pytest.importorskip('rclpy', reason='rclpy not installed (pip install .[ros])')

from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402
from test_node import FRAMES, Rig, gate_values  # noqa: E402

from aura_ros.ros.gate_topics import GATE_VALUES  # noqa: E402


def picture_of(msg: Image) -> np.ndarray:
    assert msg.encoding == 'rgb8' and msg.step == msg.width * 3
    return np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, 3)


def set_threshold(rig, value: float) -> None:
    rig.node.set_parameters([Parameter('gate_threshold', value=value)])
    rig.wait_for(lambda: rig.node.runtime.gate_threshold == value, 5, rig.executor,
                 f'threshold {value}')


def spin_for(rig, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        rig.executor.spin_once(timeout_sec=0.02)


def test_gate_image_draws_only_for_a_subscriber_and_marks_the_write(make_node, executor,
                                                                     wait_for, tiny_model_dir):
    rig = Rig(make_node, executor, wait_for, tiny_model_dir, gate_threshold=1.0,
              gate_image_rate_hz=20.0, gate_image_steps=40)
    try:
        node = rig.node
        for pixels in FRAMES[:4]:                       # frames stream, nobody looks
            rig.step(pixels)
        spin_for(rig, 0.5)                              # ten timer periods
        assert node.health()['gate_images_rendered'] == 0

        pictures, values = [], []
        sub = rig.client.create_subscription(Image, '/aura/gate_image', pictures.append, 1)
        rig.client.create_subscription(Float64MultiArray, '/aura/gate_values', values.append, 10)
        wait_for(lambda: pictures and node.gate_topics.values_pub.get_subscription_count(), 10,
                 executor, 'a gate picture, and ~/gate_values matched')
        before = picture_of(pictures[-1])
        view = node.gate_topics.view
        assert not chart_has_writes(before, view)       # threshold 1: no write yet

        set_threshold(rig, 0.0)                         # p > 0 always: this step writes
        _, gate = rig.step(FRAMES[4])
        assert gate_values(gate)['wrote'] == '1'
        written = int(gate_values(gate)['step'])
        set_threshold(rig, 1.0)
        for pixels in FRAMES[5:8]:
            _, gate = rig.step(pixels)
            assert gate_values(gate)['wrote'] == '0'
        last = int(gate_values(gate)['step'])
        seen = len(pictures)
        wait_for(lambda: len(pictures) >= seen + 2, 10, executor, 'pictures after the steps')
        after = picture_of(pictures[-1])
        assert not np.array_equal(before, after)
        assert tick_at(after, view, view.step_x(written))
        for step in range(written - 3, last + 1):       # only there
            if step != written:
                assert not tick_at(after, view, view.step_x(step)), step
        thumbs = after[view.height - view.thumb_size[1]:]
        assert np.any(np.all(thumbs == WRITE, axis=2))  # the written frame's red frame

        def by_step():
            return {int(m.data[GATE_VALUES.index('step')]): m.data for m in values}

        wait_for(lambda: last in by_step(), 10, executor, 'the last step on ~/gate_values')
        assert values[-1].layout.dim[0].label == ','.join(GATE_VALUES)
        by_step = by_step()
        assert by_step[written][GATE_VALUES.index('wrote')] == 1.0
        assert by_step[written][GATE_VALUES.index('threshold')] == 0.0
        assert by_step[last][GATE_VALUES.index('wrote')] == 0.0

        rig.client.destroy_subscription(sub)            # nobody looks again: no drawing
        wait_for(lambda: node.gate_topics.image_pub.get_subscription_count() == 0, 10,
                 executor, 'the subscriber gone')
        spin_for(rig, 0.2)
        drawn = node.health()['gate_images_rendered']
        rig.step(FRAMES[0])
        spin_for(rig, 0.5)
        assert node.health()['gate_images_rendered'] == drawn
    finally:
        rig.close()


def test_foxglove_layout_names_only_topics_the_node_publishes(rig):
    published = {name for name, _ in rig.node.get_publisher_names_and_types_by_node(
        'aura', rig.node.get_namespace())}
    topics = set().union(*layout_topics(json.loads(LAYOUT.read_text())).values())
    assert topics <= published, topics - published


@pytest.fixture
def rig(make_node, executor, wait_for, tiny_model_dir):
    made = Rig(make_node, executor, wait_for, tiny_model_dir)
    yield made
    made.close()


def test_gate_report_draws_a_recorded_run(make_node, executor, wait_for, tiny_model_dir,
                                          tmp_path):
    """A run over DDS recorded into an mcap bag (gate + camera), then `gate-report BAG`."""
    from PIL import Image as PILImage

    from aura_ros.cli import main as cli
    from aura_ros.data.gate_bag import read_gate_view
    from aura_ros.ros.so101.record import BagRecorder

    rig = Rig(make_node, executor, wait_for, tiny_model_dir, gate_threshold=1.0)
    bag, png = tmp_path / 'run', tmp_path / 'gate.png'
    recorder = None
    try:
        rig.client.destroy_publisher(rig.image_pub)     # reliable, as the recorder subscribes
        rig.image_pub = rig.client.create_publisher(Image, 'image', 10)
        recorder = BagRecorder(bag, {'/aura/gate': 'diagnostic_msgs/msg/DiagnosticArray',
                                     '/image': 'sensor_msgs/msg/Image'}, time.time,
                               context=executor.context)
        executor.add_node(recorder)
        wait_for(lambda: rig.image_pub.get_subscription_count() >= 2
                 and rig.node.gate_pub.get_subscription_count() >= 2, 10, executor, 'recorder')
        written = []
        for i, pixels in enumerate(FRAMES):
            if i == len(FRAMES) - 1:
                assert rig.reset().success                  # a new episode: steps from 1
            if i in (2, 5):
                set_threshold(rig, 0.0)
            _, gate = rig.step(pixels)
            if i in (2, 5):
                written.append(int(gate_values(gate)['step']))
                set_threshold(rig, 1.0)
        wait_for(lambda: recorder.counts['/aura/gate'] == len(FRAMES), 10, executor, 'recorded')
    finally:
        if recorder is not None:
            executor.remove_node(recorder)
            recorder.close()
            recorder.destroy_node()
        rig.close()

    assert cli(['gate-report', str(bag), '--out', str(png), '--thumbnails', '2']) == 0
    picture = np.asarray(PILImage.open(png).convert('RGB'))
    view = read_gate_view(bag, thumbnails=2)
    assert picture.shape == (view.height, view.width, 3)
    assert [f.step for f in view.written] == written
    assert np.array_equal(view.written[0].pixels, FRAMES[2])     # found by stamp
    steps = [s.step for s in view.samples]
    assert steps == list(range(1, len(FRAMES) + 1))               # one timeline across the reset
    assert view.episode_starts == [len(FRAMES)]
    x = view.step_x(len(FRAMES)) - 1                              # the reset's dark line
    dark = np.all(picture[view.p_rows[0]:view.p_rows[1], x - 1:x + 2] == (30, 30, 30), axis=2)
    assert dark.any(axis=1).mean() > 0.8
    for step in steps:
        assert tick_at(picture, view, view.step_x(step)) == (step in written), step


def test_gate_report_names_a_bag_without_the_gate(tmp_path, capsys):
    from aura_ros.cli import main as cli

    assert cli(['gate-report', str(tmp_path / 'nothing.mcap')]) == 2
    assert 'not a rosbag2 bag' in capsys.readouterr().err
