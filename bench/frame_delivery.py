"""Camera-frame delivery between two processes on one host, per frame size, QoS and transport.

    python bench/frame_delivery.py [--frames 240] [--rate 30] [--sub-qos same|auto]
                                   [--out docs/results/frame_delivery]

For every case a publisher process (a camera driver stand-in: sensor_msgs/Image rgb8, fresh
stamp per frame, paced at --rate, best effort or reliable, depth 1) and a subscriber process
(depth 1, aura_node's input_depth default) are started with the case's Fast DDS environment.
The subscriber asks for the publisher's reliability (--sub-qos same: input_qos sensor_data or
reliable), or with --sub-qos auto does what aura_node's default input_qos auto does, with the
node's own code (aura_ros/ros/adaptive_qos.py): best effort until it sees the publisher, then
the publisher's reliability, re-checked every second (the node's /diagnostics period). The
transports:

    default     nothing set (rmw_fastrtps' own transports)
    UDPv4, SHM, LARGE_DATA
                FASTDDS_BUILTIN_TRANSPORTS=<that>
    profile     FASTDDS_DEFAULT_PROFILES_FILE=config/fastdds_large_frames.xml (in both processes)
    profile_sub_only
                the profile in the subscriber only (a camera driver started without it)

The subscriber counts frames received, and losses it can see by itself: gaps in the publisher's
sequence numbers (MessageInfo.publication_sequence_number, per publisher_gid), including the
frames before the first one it got. The table compares that count with the truth (published -
received). A frame received twice (by both subscriptions while auto switches) counts once.
Writes <out>.json and <out>.md. DDS stays on loopback (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST);
the domain is ROS_DOMAIN_ID or 137.

A benchmark, not a test: it needs two processes and two idle-ish cores; numbers depend on the
machine and its load, which the results file records.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aura_ros import provenance

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / 'config' / 'fastdds_large_frames.xml'
SIZES = {'640x480': (640, 480), '1280x720': (1280, 720)}
QOS = ('best_effort', 'reliable')
TRANSPORTS = ('default', 'UDPv4', 'SHM', 'LARGE_DATA', 'profile', 'profile_sub_only')


def transport_env(transport: str, role: str) -> dict:
    """The environment that selects a transport (both processes get the same one, except for
    profile_sub_only: the profile in the subscriber, a driver left at its defaults)."""
    if transport == 'default' or (transport == 'profile_sub_only' and role == 'pub'):
        return {}
    if transport.startswith('profile'):
        return {'FASTDDS_DEFAULT_PROFILES_FILE': str(PROFILE)}
    return {'FASTDDS_BUILTIN_TRANSPORTS': transport}


def qos_profile(name: str):
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

    if name == 'best_effort':
        profile = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
        profile.durability = qos_profile_sensor_data.durability
        return profile
    return QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)


# -- the two roles ------------------------------------------------------------------------------


def publish(args) -> int:
    """Wait for the subscriber, publish --frames frames at --rate, report what was sent."""
    import array

    import numpy as np
    import rclpy
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node('frame_delivery_pub')
    width, height = SIZES[args.size]
    pub = node.create_publisher(Image, 'bench_image', qos_profile(args.qos))
    pixels = np.random.default_rng(0).integers(0, 256, height * width * 3, dtype=np.uint8)
    msg = Image(height=height, width=width, encoding='rgb8', step=width * 3)
    msg.data = array.array('B', pixels.tobytes())
    deadline = time.monotonic() + 30
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    matched = pub.get_subscription_count() > 0
    time.sleep(1.0)                     # let reliable readers finish matching both ways
    period = 1.0 / args.rate
    start = time.monotonic()
    late = 0
    for i in range(args.frames):
        due = start + i * period
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        elif wait < -period:
            late += 1
        msg.header.stamp = node.get_clock().now().to_msg()
        pub.publish(msg)
    elapsed = time.monotonic() - start
    time.sleep(1.0)                     # reliable: give the last frames time to be resent
    print(json.dumps({'published': args.frames, 'matched': matched, 'late': late,
                      'rate_hz': (args.frames - 1) / elapsed if elapsed > 0 else 0.0}),
          flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def subscribe(args) -> int:
    """Count frames, sequence gaps and latency until --stop-file exists; print one JSON line."""
    import numpy as np
    import rclpy
    from rclpy.clock import Clock, ClockType
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node('frame_delivery_sub')
    got = {'received': 0, 'last_seq': {}, 'gaps': 0, 'seq_known': True, 'latency': [],
           'bad_size': 0, 'copies': 0, 'switches': [], 'while': {}}
    sub = None
    width, height = SIZES[args.size]

    def on_image(msg, info) -> None:
        seq = info.get('publication_sequence_number')
        gid = info.get('publisher_gid')
        key = bytes(gid['data']) if isinstance(gid, dict) and 'data' in gid else repr(gid)
        last = got['last_seq'].get(key, 0)     # a writer's first sample has sequence number 1
        if seq and seq <= last:
            got['copies'] += 1                 # had it already (auto: both subscriptions)
            return
        got['received'] += 1
        asked = sub.reliability if sub is not None else args.qos     # what the subscriber asks
        got['while'][asked] = got['while'].get(asked, 0) + 1
        now = node.get_clock().now().nanoseconds
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        got['latency'].append((now - stamp) * 1e-6)
        if len(msg.data) != width * height * 3:
            got['bad_size'] += 1
        if seq is None or not seq:
            got['seq_known'] = False
            return
        if seq > last + 1:
            got['gaps'] += seq - last - 1
        got['last_seq'][key] = seq

    if args.sub_qos == 'auto':
        from aura_ros.ros.adaptive_qos import InputSubscription

        sub = InputSubscription(node, Image, 'bench_image', on_image, qos_profile('best_effort'),
                                adaptive=True)

        def adapt() -> None:
            changed = sub.adapt()
            if changed:
                got['switches'].append(changed)

        node.create_timer(1.0, adapt, clock=Clock(clock_type=ClockType.STEADY_TIME))
    else:
        node.create_subscription(Image, 'bench_image', on_image, qos_profile(args.qos))
    print('READY', flush=True)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    stop = Path(args.stop_file)
    while not stop.exists():
        executor.spin_once(timeout_sec=0.1)
    latency = np.asarray(got['latency'])
    print(json.dumps({
        'received': got['received'], 'seq_gaps': got['gaps'] if got['seq_known'] else None,
        'bad_size': got['bad_size'], 'copies': got['copies'], 'switches': got['switches'],
        'received_while': got['while'],
        'latency_p50_ms': float(np.percentile(latency, 50)) if latency.size else None,
        'latency_p99_ms': float(np.percentile(latency, 99)) if latency.size else None}),
        flush=True)
    os._exit(0)          # some transports (LARGE_DATA's TCP) can hang in shutdown: not measured


# -- the driver ---------------------------------------------------------------------------------


def _role(role: str, case: dict, args) -> subprocess.Popen:
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST', PYTHONUNBUFFERED='1',
               RMW_IMPLEMENTATION='rmw_fastrtps_cpp',
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO),
                                                        os.environ.get('PYTHONPATH')])))
    env.setdefault('ROS_DOMAIN_ID', '137')
    for key in ('FASTDDS_BUILTIN_TRANSPORTS', 'FASTDDS_DEFAULT_PROFILES_FILE'):
        env.pop(key, None)
    env.update(transport_env(case['transport'], role))
    cmd = [sys.executable, __file__, '--role', role, '--size', case['size'], '--qos',
           case['qos'], '--frames', str(args.frames), '--rate', str(args.rate),
           '--stop-file', args.stop_file, '--sub-qos', case.get('sub_qos', 'same')]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _last_json(text: str) -> dict:
    for line in reversed(text.splitlines()):
        if line.startswith('{'):
            return json.loads(line)
    raise RuntimeError(f'no result line in:\n{text}')


def run_case(case: dict, args) -> dict:
    sub = _role('sub', case, args)
    assert sub.stdout.readline().strip() == 'READY'
    pub = _role('pub', case, args)
    try:
        pub_out, _ = pub.communicate(timeout=60 + 2 * args.frames / args.rate)
        time.sleep(0.5)
        Path(args.stop_file).touch()
        sub_out, _ = sub.communicate(timeout=30)
    finally:
        for proc in (pub, sub):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        Path(args.stop_file).unlink(missing_ok=True)
    sent, heard = _last_json(pub_out), _last_json(sub_out)
    lost = sent['published'] - heard['received']
    return {**case, **sent, **heard, 'lost': lost,
            'delivered': heard['received'] / sent['published'],
            'load_1min': round(os.getloadavg()[0], 1)}


def table(rows: list[dict]) -> str:
    lines = ['| frame | QoS | transport | delivered | lost (truth) | lost (seq gaps seen by the '
             'subscriber) | latency p50 / p99 ms | publisher rate Hz | load (1 min) |',
             '|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        lat = ('-' if r['latency_p50_ms'] is None
               else f'{r["latency_p50_ms"]:.1f} / {r["latency_p99_ms"]:.1f}')
        gaps = 'n/a' if r['seq_gaps'] is None else str(r['seq_gaps'])
        qos = r['qos']
        if r.get('sub_qos') == 'auto':
            asked = ', '.join(f'{n} {k}' for k, n in sorted(r['received_while'].items()))
            qos = f'{qos}; subscriber auto: {asked or "-"}'
        lines.append(f'| {r["size"]} | {qos} | {r["transport"]} | '
                     f'{r["received"]}/{r["published"]} ({r["delivered"]:.1%}) | {r["lost"]} | '
                     f'{gaps} | {lat} | {r["rate_hz"]:.1f} | {r.get("load_1min", "-")} |')
    return '\n'.join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--role', choices=('pub', 'sub'), help=argparse.SUPPRESS)
    parser.add_argument('--size', default='640x480', choices=sorted(SIZES))
    parser.add_argument('--qos', default='best_effort', choices=QOS)
    parser.add_argument('--frames', type=int, default=240)
    parser.add_argument('--rate', type=float, default=30.0)
    parser.add_argument('--sizes', nargs='+', default=list(SIZES), choices=sorted(SIZES))
    parser.add_argument('--qos-list', nargs='+', default=list(QOS), choices=QOS)
    parser.add_argument('--transports', nargs='+', default=list(TRANSPORTS), choices=TRANSPORTS)
    parser.add_argument('--sub-qos', default='same', choices=('same', 'auto'),
                        help="subscriber: the publisher's reliability, or input_qos auto")
    parser.add_argument('--repeat', type=int, default=1, help='runs of the whole matrix')
    parser.add_argument('--out', default=None, help='write <out>.json and <out>.md')
    parser.add_argument('--stop-file', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stop_file is None:
        args.stop_file = os.path.join(tempfile.gettempdir(), f'frame_delivery_{os.getpid()}.stop')
    if args.role == 'pub':
        return publish(args)
    if args.role == 'sub':
        return subscribe(args)
    rows = []
    for repeat in range(args.repeat):
        for size in args.sizes:
            for qos in args.qos_list:
                for transport in args.transports:
                    row = run_case({'size': size, 'qos': qos, 'transport': transport,
                                    'sub_qos': args.sub_qos, 'repeat': repeat}, args)
                    rows.append(row)
                    print(table([row]).splitlines()[-1], flush=True)
    meta = {**provenance.header(provenance.command('python bench/frame_delivery.py'),
                                'at the end; shared with other jobs'),
            'frames': args.frames, 'rate_hz': args.rate,
            'subscriber': ('rclpy, depth 1 (aura_node input_depth default), '
                           + ('input_qos auto (aura_ros/ros/adaptive_qos.py, re-checked every '
                              '1 s)' if args.sub_qos == 'auto' else 'same reliability')),
            'publisher': 'rclpy, depth 1'}
    print(table(rows))
    if args.out:
        out = Path(args.out)
        out.with_suffix('.json').write_text(json.dumps({**meta, 'rows': rows}, indent=2) + '\n')
        out.with_suffix('.md').write_text(
            f'# Frame delivery between two processes (rgb8 at {args.rate:g} Hz)\n\n'
            f'Command: `{meta["command"]}`  \nMachine: {meta["machine"]}.  \n'
            f'Publisher: {meta["publisher"]}; subscriber: {meta["subscriber"]}; '
            f'{args.frames} frames per case. "seq gaps" is what a subscriber can count by '
            f"itself from the publisher's sequence numbers; frames lost after the last one it "
            f'received are invisible to it.\n\n{table(rows)}\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
