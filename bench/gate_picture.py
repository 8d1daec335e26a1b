"""The gate picture from a real run: the SO-101 world driven by aura_node (bundled model).

    python bench/gate_picture.py [--tasks 6] [--out docs/results]

Runs the closed loop of `python -m aura_ros demo` (so101_sim + aura_node, two processes over
DDS on loopback) while this process subscribes to /aura/gate_image, as rqt_image_view would,
and records /aura/gate, /aura/gate_values and the camera /image into an mcap bag, as `ros2 bag
record` would. Writes:

    <out>/gate_image.png    the last live ~/gate_image picture that shows a write
    <out>/gate_report.png   `python -m aura_ros gate-report BAG` of the whole recorded run
"""

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TOPICS = {'/aura/gate': 'diagnostic_msgs/msg/DiagnosticArray',
          '/aura/gate_values': 'std_msgs/msg/Float64MultiArray',
          '/image': 'sensor_msgs/msg/Image'}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--tasks', type=int, default=6)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', default=str(REPO / 'docs' / 'results'))
    args = parser.parse_args()
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    os.environ.setdefault('ROS_DOMAIN_ID', '139')
    import rclpy
    from PIL import Image as PILImage
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import Image

    from aura_ros.cli import main as cli
    from aura_ros.ros.params import bundled_model_dir
    from aura_ros.ros.so101.closed_loop import Loop, loop_env, run_loop
    from aura_ros.ros.so101.record import BagRecorder
    from aura_ros.runtime.gate_view import WRITE, GateView

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix='gate_picture_'))
    context = Context()
    rclpy.init(context=context, domain_id=int(os.environ['ROS_DOMAIN_ID']))
    executor = SingleThreadedExecutor(context=context)
    viewer = Node('gate_picture_viewer', context=context)
    tick_row = GateView().p_rows[0] - 3
    kept = {'picture': None, 'received': 0}

    def on_picture(msg: Image) -> None:
        kept['received'] += 1
        pixels = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, 3)
        if np.any(np.all(pixels[tick_row] == WRITE, axis=1)):
            kept['picture'] = pixels.copy()

    viewer.create_subscription(Image, '/aura/gate_image', on_picture, 1)
    recorder = BagRecorder(work / 'run', TOPICS, time.time, context=context)
    for node in (viewer, recorder):
        executor.add_node(node)
    stop = threading.Event()
    spinner = threading.Thread(target=lambda: [executor.spin_once(timeout_sec=0.05)
                                               for _ in iter(stop.is_set, True)], daemon=True)
    spinner.start()
    try:
        loop = Loop(Path(bundled_model_dir()), args.tasks, seed=args.seed, distractor_prob=0.0)
        result, _ = run_loop(loop, work / 'loop', env=loop_env(int(os.environ['ROS_DOMAIN_ID'])))
    finally:
        time.sleep(1.0)
        stop.set()
        spinner.join(timeout=5)
        recorder.close()
        executor.shutdown()
        rclpy.try_shutdown(context=context)
    print(f'run: {result["successes"]}/{result["tasks"]} tasks, {result["writes"]} writes in '
          f'{result["steps"]} steps; pictures received {kept["received"]}; recorded '
          f'{recorder.counts}')
    if kept['picture'] is None:
        print('no picture with a write was received', file=sys.stderr)
        return 1
    PILImage.fromarray(kept['picture']).save(out / 'gate_image.png')
    return cli(['gate-report', str(work / 'run'), '--out', str(out / 'gate_report.png')])


if __name__ == '__main__':
    sys.exit(main())
