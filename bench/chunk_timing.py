"""Are the action chunks aura_node publishes still ahead when a controller receives them?

    python bench/chunk_timing.py [--seconds 20] [--size 640x480] [--out docs/results/chunk_timing]

Starts aura_node (the bundled model, default parameters) as its own process and plays, from this
process, a 30 Hz rgb8 camera and joint states, as a robot would; it listens to the chunks as a
controller would. Both processes load config/fastdds_large_frames.xml (the recommended set-up,
README "On a real robot"; --no-profile for Fast DDS defaults). For each received chunk it records:

    step latency      observation stamp -> chunk publish time (header.stamp)
    transit           header.stamp -> the middleware's reception time (MessageInfo)
    lead              first point's time (header.stamp + time_from_start) - reception time
    late points       points whose time had passed at reception (must be 0)

and the chunk points the node left out as already past (the gate's first_point). Writes
<out>.json and <out>.md. A benchmark, not a test: numbers depend on the machine and its load,
which the file records.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from aura_ros import provenance

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / 'config' / 'fastdds_large_frames.xml'
NS = 1_000_000_000


def ns_of(stamp) -> int:
    return stamp.sec * NS + stamp.nanosec


def pct(values, q) -> float:
    return float(np.percentile(values, q)) if len(values) else float('nan')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--seconds', type=float, default=20.0)
    parser.add_argument('--rate', type=float, default=30.0)
    parser.add_argument('--size', default='640x480')
    parser.add_argument('--no-profile', action='store_true')
    parser.add_argument('--out', default=None)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split('x'))
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST', PYTHONUNBUFFERED='1')
    env.setdefault('ROS_DOMAIN_ID', '137')
    if not args.no_profile:
        env['FASTDDS_DEFAULT_PROFILES_FILE'] = str(PROFILE)
    os.environ.update({k: env[k] for k in ('ROS_AUTOMATIC_DISCOVERY_RANGE', 'ROS_DOMAIN_ID')})
    if not args.no_profile:
        os.environ['FASTDDS_DEFAULT_PROFILES_FILE'] = str(PROFILE)

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Header
    from trajectory_msgs.msg import JointTrajectory

    from aura_ros.ros.params import BUNDLED_MODEL, DECLARATIONS, bundled_model_dir
    from aura_ros.runtime import load_model_dir

    spec = load_model_dir(bundled_model_dir())          # what the node loads by default
    joints = (spec.joint_stats.mean if spec.joint_stats is not None
              else [0.0] * len(spec.joint_names))
    period_ns = spec.action_period_s * NS
    node = subprocess.Popen([sys.executable, '-m', 'aura_ros.ros.node'], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rclpy.init()
    client = rclpy.create_node('chunk_timing_client')
    executor = SingleThreadedExecutor()
    executor.add_node(client)
    image_pub = client.create_publisher(Image, 'image', qos_profile_sensor_data)
    joint_pub = client.create_publisher(JointState, 'joint_states', qos_profile_sensor_data)
    chunks, gates, sent = [], [], set()

    def on_chunk(msg, info) -> None:
        at = info.get('received_timestamp') or client.get_clock().now().nanoseconds
        chunks.append((msg, at))

    client.create_subscription(JointTrajectory, '/aura/action_chunk', on_chunk, 50)
    client.create_subscription(DiagnosticArray, '/aura/gate', gates.append, 50)
    deadline = time.monotonic() + 120
    while not (image_pub.get_subscription_count() and joint_pub.get_subscription_count()
               and client.count_publishers('/aura/action_chunk')):
        executor.spin_once(timeout_sec=0.05)
        if time.monotonic() > deadline or node.poll() is not None:
            print(node.stdout.read() if node.poll() is not None else 'no discovery')
            return 1
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8).tobytes()
              for _ in range(4)]
    image = Image(height=height, width=width, encoding='rgb8', step=width * 3)
    frames_sent = int(args.seconds * args.rate)
    start = time.monotonic()
    for i in range(frames_sent):
        due = start + i / args.rate
        while time.monotonic() < due:
            executor.spin_once(timeout_sec=max(0.0, min(0.005, due - time.monotonic())))
        stamp = client.get_clock().now().to_msg()
        joint_pub.publish(JointState(header=Header(stamp=stamp), name=list(spec.joint_names),
                                     position=[float(q) for q in joints]))
        image.header.stamp = stamp
        image.data = frames[i % 4]
        image_pub.publish(image)
        sent.add(ns_of(stamp))
    end = time.monotonic() + 2
    while time.monotonic() < end:
        executor.spin_once(timeout_sec=0.05)
    node.send_signal(signal.SIGINT)
    node.wait(timeout=30)

    latency, transit, lead, late, first_points = [], [], [], 0, []
    for msg, at in chunks:
        published = ns_of(msg.header.stamp)
        times = [published + ns_of(p.time_from_start) for p in msg.points]
        origin = next(((times[0] - int(round(k * period_ns)), k - 1) for k in range(1, 9)
                       if times[0] - int(round(k * period_ns)) in sent), None)
        if origin is not None:
            latency.append((published - origin[0]) / 1e6)
            first_points.append(origin[1])
        transit.append((at - published) / 1e6)
        lead.append((times[0] - at) / 1e6)
        late += sum(t < at for t in times)
    result = {
        **provenance.header(provenance.command('python bench/chunk_timing.py'),
                            'shared with other jobs'),
        'model': f'bundled models/{BUNDLED_MODEL} ({spec.name!r}, chunk {spec.chunk}, period '
                 f'{spec.action_period_s * 1e3:.1f} ms)', 'camera': f'{args.size} rgb8',
        'rate_hz': args.rate, 'fastdds_profile': not args.no_profile,
        'chunk_min_lead_s': DECLARATIONS['chunk_min_lead_s'][0],
        'frames_sent': frames_sent, 'chunks_received': len(chunks), 'gates_received': len(gates),
        'late_points': late,
        'step_latency_ms': {'p50': pct(latency, 50), 'p99': pct(latency, 99),
                            'max': max(latency, default=float('nan'))},
        'transit_ms': {'p50': pct(transit, 50), 'p99': pct(transit, 99),
                       'max': max(transit, default=float('nan'))},
        'first_point_lead_ms': {'min': min(lead, default=float('nan')), 'p1': pct(lead, 1),
                                'p50': pct(lead, 50)},
        'points_left_out_per_chunk': {str(k): first_points.count(k)
                                      for k in sorted(set(first_points))},
    }
    print(json.dumps(result, indent=2))
    if args.out:
        out = Path(args.out)
        out.with_suffix('.json').write_text(json.dumps(result, indent=2) + '\n')
        r = result
        out.with_suffix('.md').write_text(
            f'# Chunk timing at the controller\n\nCommand: `{r["command"]}`  \nMachine: '
            f'{r["machine"]}. Model: {r["model"]}; camera {r["camera"]} at {args.rate:g} Hz; '
            f'Fast DDS profile: {"yes" if r["fastdds_profile"] else "no"}; default parameters '
            f'(chunk_min_lead_s {r["chunk_min_lead_s"]:g} s).\n\n'
            f'| quantity | p50 | p99 | max / min |\n|---|---|---|---|\n'
            f'| step latency (observation -> publish), ms | {r["step_latency_ms"]["p50"]:.1f} | '
            f'{r["step_latency_ms"]["p99"]:.1f} | {r["step_latency_ms"]["max"]:.1f} |\n'
            f'| transit (publish -> reception), ms | {r["transit_ms"]["p50"]:.1f} | '
            f'{r["transit_ms"]["p99"]:.1f} | {r["transit_ms"]["max"]:.1f} |\n'
            f'| first point ahead of reception, ms | {r["first_point_lead_ms"]["p50"]:.1f} | '
            f'{r["first_point_lead_ms"]["p1"]:.1f} (p1) | {r["first_point_lead_ms"]["min"]:.1f} '
            f'(min) |\n\n'
            f'Frames sent {r["frames_sent"]}, chunks received {r["chunks_received"]}, points in '
            f'the past at reception: **{r["late_points"]}**. Chunks by points left out as '
            f'already past: {r["points_left_out_per_chunk"]}.\n')
    client.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
