"""End-to-end benchmark of aura_node: image published -> action chunk received, over real DDS.

`aura_node` runs as its own process (as on a robot); a client node in this process publishes
`rgb8` frames and joint states at a fixed rate, stamps each image with the time it is published
(the same host clock the node runs on), and records when the matching action chunk arrives. The
node's own per-stage timings are read from its `/diagnostics`. Frames with no chunk are counted
as dropped (the node drops frames it cannot keep up with instead of queueing them).
"""

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Optional

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState

READY = 'memory state'


def start_node(model_dir: str = '', engine: str = 'torch', extra=()) -> subprocess.Popen:
    """aura_node as a process; returns once it reports its model (or raises)."""
    args = [sys.executable, '-u', '-m', 'aura_ros.ros.node', '--ros-args',
            '-p', f'memory_engine:={engine}', *extra]
    if model_dir:
        args += ['-p', f'model_dir:={os.path.abspath(model_dir)}']
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST')
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if READY in line:
            threading.Thread(target=proc.stdout.read, daemon=True).start()   # keep draining
            return proc
    raise RuntimeError('aura_node did not start:\n' + ''.join(lines))


def stop_node(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


class Client:
    """Publishes frames at a rate and matches each step's output to its frame by stamp."""

    def __init__(self, context: Context, joint_names, size=224):
        self.node = Node('aura_bench_client', context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.image_pub = self.node.create_publisher(Image, 'image', qos_profile_sensor_data)
        self.joint_pub = self.node.create_publisher(JointState, 'joint_states',
                                                    qos_profile_sensor_data)
        # the gate carries the frame's stamp and is published right after the action chunk
        self.node.create_subscription(DiagnosticArray, '/aura/gate', self._on_chunk, 50)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_health, 10)
        self.joint_names = list(joint_names)
        rng = np.random.default_rng(0)
        self.frames = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8).tobytes()
                       for _ in range(8)]
        self.size = size
        self.sent: dict[tuple[int, int], float] = {}
        self.latencies: list[float] = []
        self.health: Optional[dict] = None
        self._spin = threading.Thread(target=self._spin_forever, daemon=True)
        self._running = True
        self._spin.start()

    def _spin_forever(self) -> None:
        while self._running:
            self.executor.spin_once(timeout_sec=0.01)

    def _on_chunk(self, msg: DiagnosticArray) -> None:
        now = time.monotonic()
        sent = self.sent.pop((msg.header.stamp.sec, msg.header.stamp.nanosec), None)
        if sent is not None:
            self.latencies.append(now - sent)

    def _on_health(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if 'AURA' in status.name:
                self.health = {kv.key: kv.value for kv in status.values}

    def wait_for_node(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.image_pub.get_subscription_count() == 0 or self.health is None:
            if time.monotonic() > deadline:
                raise RuntimeError('aura_node was not discovered on this ROS_DOMAIN_ID')
            time.sleep(0.05)

    def run(self, rate_hz: float, duration_s: float) -> dict:
        """Publish at `rate_hz` for `duration_s`; latency statistics and drops."""
        self.sent.clear()
        self.latencies = []
        period = 1.0 / rate_hz
        frames = int(rate_hz * duration_s)
        start = time.monotonic()
        for i in range(frames):
            target = start + i * period
            pause = target - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            stamp = self.node.get_clock().now().to_msg()
            joints = JointState(name=self.joint_names,
                                position=[0.1 * np.sin(i * 0.01)] * len(self.joint_names))
            joints.header.stamp = stamp
            self.joint_pub.publish(joints)
            image = Image(height=self.size, width=self.size, encoding='rgb8', step=3 * self.size)
            image.header.stamp = stamp
            image.data = self.frames[i % len(self.frames)]
            self.sent[(stamp.sec, stamp.nanosec)] = time.monotonic()
            self.image_pub.publish(image)
        time.sleep(1.0)                                   # let the last chunks arrive
        ms = np.asarray(self.latencies) * 1e3
        received = len(self.latencies)
        result = {'rate_hz': rate_hz, 'frames': frames, 'received': received,
                  'dropped': frames - received,
                  'achieved_rate_hz': round(frames / (time.monotonic() - start - 1.0), 2)}
        if received:
            result.update(p50_ms=round(float(np.percentile(ms, 50)), 3),
                          p99_ms=round(float(np.percentile(ms, 99)), 3),
                          max_ms=round(float(ms.max()), 3))
        return result

    def stages(self) -> dict:
        """The node's own per-stage p50 timings (ms) from its last /diagnostics message."""
        time.sleep(1.2)
        health = self.health or {}
        return {k[len('stage_'):-len('_p50_ms')]: float(v) for k, v in health.items()
                if k.startswith('stage_') and k.endswith('_p50_ms')}

    def close(self) -> None:
        self._running = False
        self._spin.join()
        self.executor.shutdown()
        self.node.destroy_node()


def compare_threads(model_dir: str = '', threads=(2, 1), repeats: int = 2,
                    duration_s: float = 30.0, progress=print) -> list[dict]:
    """The same 30 Hz run with aura_node's `inference_threads` at each value, interleaved."""
    from aura_ros.ros.params import bundled_model_dir
    from aura_ros.runtime import load_model_dir

    spec = load_model_dir(model_dir or bundled_model_dir())
    rows = []
    for _ in range(repeats):
        for count in threads:
            proc = start_node(model_dir, extra=['-p', f'inference_threads:={count}'])
            context = Context()
            rclpy.init(context=context)
            client = Client(context, spec.joint_names)
            try:
                client.wait_for_node()
                client.run(30.0, 2.0)
                row = {'inference_threads': count, **client.run(30.0, duration_s),
                       'stages': client.stages()}
            finally:
                client.close()
                rclpy.try_shutdown(context=context)
                stop_node(proc)
            progress(f'  inference_threads {count}: {row}')
            rows.append(row)
    return rows


def run(model_dir: str = '', rate_hz: float = 30.0, duration_s: float = 60.0,
        sweep=(30, 60, 90, 120, 180, 240), sweep_s: float = 10.0, engine: str = 'torch',
        progress=print) -> dict:
    """node_e2e at `rate_hz` for `duration_s`, then the highest sweep rate with < 5% drops."""
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    os.environ.setdefault('ROS_DOMAIN_ID', str(101 + os.getpid() % 100))
    from aura_ros.ros.params import bundled_model_dir
    from aura_ros.runtime import load_model_dir

    spec = load_model_dir(model_dir or bundled_model_dir())
    proc = start_node(model_dir, engine)
    context = Context()
    rclpy.init(context=context)
    client = Client(context, spec.joint_names)
    try:
        client.wait_for_node()
        client.run(rate_hz, 2.0)                          # warm-up
        progress(f'node e2e: {rate_hz:g} Hz for {duration_s:g} s')
        e2e = client.run(rate_hz, duration_s)
        e2e['stages'] = client.stages()
        progress(f'  {e2e}')
        sweep_rows, max_rate = [], None
        for rate in sweep:
            row = client.run(rate, sweep_s)
            sweep_rows.append(row)
            progress(f'  sweep {rate:g} Hz: {row}')
            kept_up = row['achieved_rate_hz'] >= 0.9 * rate   # the client itself kept the rate
            if row['dropped'] / max(row['frames'], 1) >= 0.05 or not kept_up:
                break
            max_rate = rate
        health = client.health or {}
    finally:
        client.close()
        rclpy.try_shutdown(context=context)
        code = stop_node(proc)
    return {'node_e2e': e2e, 'rate_sweep': sweep_rows, 'max_rate_hz': max_rate,
            'node_health': health, 'node_exit_code': code}


def compare_gate_image(model_dir: str = '', repeats: int = 3, duration_s: float = 20.0,
                       rate_hz: float = 30.0, progress=print) -> list[dict]:
    """The same `rate_hz` run without and with a subscriber on ~/gate_image, interleaved in
    one aura_node process (default parameters: drawn at 5 Hz while subscribed): what the
    picture costs the steps. Each row also says how many pictures the node drew in it."""
    from aura_ros.ros.params import bundled_model_dir
    from aura_ros.runtime import load_model_dir

    spec = load_model_dir(model_dir or bundled_model_dir())
    proc = start_node(model_dir)
    context = Context()
    rclpy.init(context=context)
    client = Client(context, spec.joint_names)

    def rendered() -> int:
        client.stages()                                   # waits for a fresh /diagnostics
        return int((client.health or {}).get('gate_images_rendered', 0))

    rows = []
    try:
        client.wait_for_node()
        client.run(rate_hz, 2.0)                          # warm-up
        for _ in range(repeats):
            for watching in (False, True):
                pictures: list = []
                sub = client.node.create_subscription(Image, '/aura/gate_image',
                                                      pictures.append, 1) if watching else None
                deadline = time.monotonic() + 15.0
                while watching and not pictures and time.monotonic() < deadline:
                    time.sleep(0.05)
                drawn = rendered()
                row = {'gate_image_subscriber': watching, **client.run(rate_hz, duration_s)}
                row.update(pictures_drawn=rendered() - drawn, pictures_received=len(pictures))
                if sub is not None:
                    client.node.destroy_subscription(sub)
                progress(f'  gate_image subscriber {"yes" if watching else "no "}: {row}')
                rows.append(row)
    finally:
        client.close()
        rclpy.try_shutdown(context=context)
        stop_node(proc)
    return rows
