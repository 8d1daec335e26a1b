"""Soak test of aura_node: one long episode at the highest rate the node sustains, no drops.

`python -m aura_ros bench soak --frames 100000` starts `aura_node` as a process (with a
state_file, so every write is also an fsynced snapshot, as on a robot that must survive a crash)
and drives it closed-loop: joints + image, wait for that image's action chunk, next frame. That is
the highest sustainable rate by construction (nothing queues, nothing is dropped). Recorded per
window of frames: latency percentiles (image published -> chunk received), the node's RSS
(psutil on its pid), the state bytes and snapshot bytes from its /diagnostics; and every WARN /
ERROR line the node prints. Writes a JSON summary and a PNG plot over time.

The summary also sets the crash-resume cost against a KV cache: AURA persists a fixed-size
snapshot only when the gate writes; a KV cache appends (d_key + d_val) floats every step
(256 bytes at the default 32 + 32) and would have to persist all of it.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

import numpy as np

from aura_ros import provenance

READY = 'memory state'
KV_BYTES_PER_FLOAT = 4


class NodeProcess:
    """aura_node as a process, its output kept (warnings are part of the result)."""

    def __init__(self, model_dir: str, state_file: str, engine: str = 'torch'):
        args = [sys.executable, '-u', '-m', 'aura_ros.ros.node', '--ros-args',
                '-p', f'model_dir:={os.path.abspath(model_dir)}',
                '-p', f'state_file:={state_file}',
                '-p', 'input_qos:=reliable', '-p', f'memory_engine:={engine}',
                '-p', 'device:=cpu']
        env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST', PYTHONUNBUFFERED='1')
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + 120
        while not any(READY in line for line in self.lines):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError('aura_node did not start:\n' + ''.join(self.lines))
            time.sleep(0.05)

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def warnings(self) -> list[str]:
        return [line.rstrip() for line in self.lines if '[WARN]' in line or '[ERROR]' in line]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def _percentiles(ms: np.ndarray) -> dict:
    return {f'p{q}_ms': round(float(np.percentile(ms, q)), 3) for q in (50, 90, 99)} | {
        'max_ms': round(float(ms.max()), 3), 'mean_ms': round(float(ms.mean()), 3)}


def soak(model_dir: str, frames: int, window: int, image_size: Optional[int] = None,
         engine: str = 'torch', rss_every: int = 500, progress=print) -> dict:
    """Drive aura_node for `frames` closed-loop steps; the per-window record and a summary.

    Frames are square `image_size` rgb8, or, when None, the size the model's camera expects.
    """
    import psutil
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, JointState

    from aura_ros.runtime import load_model_dir

    spec = load_model_dir(model_dir)
    width, height = ((image_size, image_size) if image_size
                     else (spec.cameras[0].width, spec.cameras[0].height))
    workdir = tempfile.mkdtemp(prefix='aura_soak_')
    state_file = os.path.join(workdir, 'aura.state')
    node = NodeProcess(model_dir, state_file, engine)
    ps = psutil.Process(node.proc.pid)
    context = Context()
    rclpy.init(context=context)
    client = Node('aura_soak_client', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(client)
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    image_pub = client.create_publisher(Image, 'image', reliable)
    joint_pub = client.create_publisher(JointState, 'joint_states', reliable)
    got: dict = {}
    health: dict = {}

    def on_health(msg):
        for status in msg.status:
            if 'AURA' in status.name:
                health.clear()
                health.update({kv.key: kv.value for kv in status.values})

    client.create_subscription(    # the gate: stamped with the frame, right after the chunk
        DiagnosticArray, '/aura/gate',
        lambda m: got.__setitem__((m.header.stamp.sec, m.header.stamp.nanosec),
                                  time.perf_counter()), 10)
    client.create_subscription(DiagnosticArray, '/diagnostics', on_health, 10)
    rng = np.random.default_rng(0)
    pool = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8).tobytes()
            for _ in range(16)]
    names = list(spec.joint_names)
    windows, rss_series, resent = [], [], 0
    latencies = np.zeros(frames)
    try:
        deadline = time.monotonic() + 60
        while (image_pub.get_subscription_count() == 0 or joint_pub.get_subscription_count() == 0
               or not health):
            if time.monotonic() > deadline:
                raise RuntimeError('aura_node was not discovered')
            executor.spin_once(timeout_sec=0.05)
        started = window_start = time.monotonic()
        rss_series.append((0, 0.0, ps.memory_info().rss))
        for i in range(frames):
            for _attempt in range(5):
                stamp = client.get_clock().now().to_msg()
                joints = JointState(name=names, position=[0.2 * np.sin(i * 0.01 + k)
                                                          for k in range(len(names))])
                joints.header.stamp = stamp
                image = Image(height=height, width=width, encoding='rgb8', step=3 * width,
                              data=pool[i % len(pool)])
                image.header.stamp = stamp
                key = (stamp.sec, stamp.nanosec)
                joint_pub.publish(joints)
                sent = time.perf_counter()
                image_pub.publish(image)
                limit = time.monotonic() + 2.0
                while key not in got and time.monotonic() < limit:
                    executor.spin_once(timeout_sec=0.01)
                if key in got:
                    latencies[i] = got.pop(key) - sent
                    break
                resent += 1                                   # rejected or lost: send again
            else:
                raise RuntimeError(f'no action chunk for frame {i} after 5 tries:\n'
                                   + ''.join(node.lines[-20:]))
            if (i + 1) % rss_every == 0:
                rss_series.append((i + 1, round(time.monotonic() - started, 2),
                                   ps.memory_info().rss))
            if (i + 1) % window == 0 or i + 1 == frames:
                now = time.monotonic()
                first = len(windows) * window
                row = {'frames': [first, i + 1], 'seconds': round(now - window_start, 2),
                       'rate_hz': round((i + 1 - first) / (now - window_start), 1),
                       'rss_mb': round(ps.memory_info().rss / 2**20, 2),
                       **_percentiles(latencies[first:i + 1] * 1e3),
                       'node': dict(health)}
                windows.append(row)
                window_start = now
                progress(f'  frames {i + 1}/{frames}: {row["rate_hz"]} Hz, p50 '
                         f'{row["p50_ms"]} ms, p99 {row["p99_ms"]} ms, RSS {row["rss_mb"]} MB')
        elapsed = time.monotonic() - started
        time.sleep(1.5)                                       # one more /diagnostics
        for _ in range(50):
            executor.spin_once(timeout_sec=0.02)
        final_health = dict(health)
    finally:
        executor.remove_node(client)
        client.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown(context=context)
        code = node.stop()
    snapshot_bytes = os.path.getsize(state_file) if os.path.exists(state_file) else 0
    shutil.rmtree(workdir, ignore_errors=True)             # our own scratch snapshot only
    result = summarise(spec, model_dir, frames, window, engine, windows, rss_series, elapsed,
                       resent, final_health, node.warnings(), code, snapshot_bytes)
    result['image'] = f'{width}x{height} rgb8'
    return result


def summarise(spec, model_dir, frames, window, engine, windows, rss_series, elapsed, resent,
              health, warnings, code, snapshot_bytes) -> dict:
    c = spec.memory
    rss = np.array([r[2] for r in rss_series], dtype=float) / 2**20
    warm = max(1, len(rss) // 10)                   # after the first tenth: warm-up done
    steps = int(health.get('steps', 0))
    writes = int(health.get('writes', 0))
    saves = int(health.get('state_saves', 0))
    written = int(health.get('state_bytes_written', 0))
    write_rate = writes / steps if steps else 0.0
    per_save = written / saves if saves else snapshot_bytes
    kv_per_step = (c.d_key + c.d_val) * KV_BYTES_PER_FLOAT
    steps_per_hour = 30 * 3600
    first, last = windows[0], windows[-1]
    return {
        'what': 'aura_node closed-loop soak: one episode, no reset, state_file on',
        'model': {'dir': str(model_dir), 'name': spec.name, 'd_model': c.d_model,
                  'd_key': c.d_key, 'd_val': c.d_val, 'engine': engine, 'device': 'cpu'},
        'machine': provenance.machine(),
        'frames': frames, 'frames_answered': frames, 'resent': resent,
        'seconds': round(elapsed, 1), 'rate_hz': round(frames / elapsed, 1),
        'window_frames': window, 'windows': windows,
        'rss_mb_series': [[f, t, round(r / 2**20, 3)] for f, t, r in rss_series],
        'rss_mb': {'start': round(float(rss[0]), 2), 'after_warmup': round(float(rss[warm]), 2),
                   'end': round(float(rss[-1]), 2), 'max': round(float(rss.max()), 2),
                   'drift_after_warmup': round(float(rss[-1] - rss[warm]), 2)},
        'latency_drift': {'first_window_p50_ms': first['p50_ms'],
                          'last_window_p50_ms': last['p50_ms'],
                          'first_window_p99_ms': first['p99_ms'],
                          'last_window_p99_ms': last['p99_ms'],
                          'p50_ratio_last_to_first': round(last['p50_ms'] / first['p50_ms'], 3)},
        'node_health_at_end': health, 'node_exit_code': code,
        'warnings': warnings, 'warning_count': len(warnings),
        'crash_resume_cost': {
            'state_bytes': int(health.get('state_bytes', 0)),
            'snapshot_file_bytes': snapshot_bytes,
            'measured_write_rate': round(write_rate, 4),
            'snapshots_written': saves, 'snapshot_bytes_written': written,
            'aura_bytes_per_hour_at_30hz': round(write_rate * steps_per_hour * per_save),
            'kv_cache_bytes_per_step': kv_per_step,
            'kv_cache_bytes_per_hour_at_30hz': kv_per_step * steps_per_hour,
            'note': 'AURA rewrites one fixed-size snapshot per gated write (atomic, fsynced); '
                    'a KV cache appends (d_key + d_val) float32 per step and its size grows '
                    'with the episode, so all of it would have to be persisted.'},
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    series = np.array(result['rss_mb_series'])
    ax1.plot(series[:, 0], series[:, 2])
    ax1.set_ylabel('node RSS (MB)')
    ax1.set_title(f'aura_node soak: {result["frames"]} frames at {result["rate_hz"]} Hz '
                  f'({result["model"]["name"]})')
    ends = [w['frames'][1] for w in result['windows']]
    for key in ('p50_ms', 'p90_ms', 'p99_ms'):
        ax2.plot(ends, [w[key] for w in result['windows']], marker='o', label=key[:-3])
    ax2.set_ylabel('latency per window (ms)')
    ax2.set_xlabel('frames')
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def default_model_dir(image_size: Optional[int]) -> tuple[str, str]:
    """The bundled model if it is there, else a random one with the default memory sizes."""
    from aura_ros.ros.params import bundled_model_dir

    bundled = bundled_model_dir()        # falls back to the source tree by itself
    if Path(bundled, 'model.yaml').exists():
        return bundled, 'bundled'
    from aura_ros.runtime.init_model import init_model_dir

    out = tempfile.mkdtemp(prefix='aura_soak_model_')
    init_model_dir(out, **({'image_size': image_size} if image_size else {}), name='random')
    return out, 'random (init-model defaults; no bundled model installed)'


def main(args) -> int:
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    os.environ.setdefault('ROS_DOMAIN_ID', str(120 + os.getpid() % 100))
    if args.model_dir:
        model_dir, source = args.model_dir, 'given'
    else:
        model_dir, source = default_model_dir(args.image_size)
    print(f'soak: {args.frames} frames of {model_dir} ({source}), window {args.window}, '
          f'ROS_DOMAIN_ID {os.environ["ROS_DOMAIN_ID"]}', flush=True)
    try:
        result = soak(model_dir, args.frames, args.window, args.image_size, args.engine,
                      progress=lambda s: print(s, flush=True))
    finally:
        if source.startswith('random'):
            shutil.rmtree(model_dir, ignore_errors=True)   # the random model made above
    result['model']['source'] = source
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + '\n')
    plot(result, out.with_suffix('.png'))
    print(f'soak: {result["rate_hz"]} Hz, RSS drift after warm-up '
          f'{result["rss_mb"]["drift_after_warmup"]} MB, p50 {result["latency_drift"]}, '
          f'{result["warning_count"]} warnings -> {out}', flush=True)
    return 0 if result['node_exit_code'] == 0 else 1
