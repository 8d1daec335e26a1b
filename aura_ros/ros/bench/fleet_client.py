"""N simulated robots over real DDS against aura_node: one fleet node, or N single-robot nodes.

What `python -m aura_ros bench fleet --dds` measures (aura_ros/bench/fleet.py runs it per N):
one client process holds one node with, per robot `armK`, a camera (or features) publisher on
/armK/image (/armK/features) and a joint-state publisher on /armK/joint_states, each robot at
`rate_hz` with the robots' phases spread over the period, every frame stamped with the time it is
published. The robots are served either by ONE aura_node (`robots: [arm1 .. armN]`) or by N
aura_node processes, one per robot in the namespace /armK: the topics are the same. A frame's
latency is its stamp -> its answer received in the client: the node publishes the robot's gate
message (stamped with the frame's stamp) right after its action chunk, so the gate marks the
chunk. A frame with no answer is dropped (the node keeps only the newest frame per robot).
The server processes' CPU (utime + stime over the measured window, /proc) and RSS are summed.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState

from aura_ros.ros.bench.latency import start_node, stop_node
from aura_ros.ros.inputs import FEATURES_ENCODING
from aura_ros.runtime import load_model_dir

CLOCK_TICK = os.sysconf('SC_CLK_TCK')


def robot_names(count: int) -> list[str]:
    return [f'arm{i + 1}' for i in range(count)]


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/<pid>/stat)."""
    with open(f'/proc/{pid}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def process_rss_bytes(pid: int) -> int:
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) * 1024
    return 0


def start_servers(model_dir: Path, robots: list[str], separate: bool,
                  engine: str = 'torch') -> list[subprocess.Popen]:
    """ONE aura_node serving `robots`, or (separate) one aura_node per robot in its namespace;
    started together, returned once each reported its model."""
    if separate:
        extras = [['-r', f'__ns:=/{robot}'] for robot in robots]
    else:
        extras = [['-p', f'robots:=[{", ".join(robots)}]']]
    with ThreadPoolExecutor(max_workers=len(extras)) as pool:
        futures = [pool.submit(start_node, str(model_dir), engine, extra) for extra in extras]
        procs, errors = [], []
        for future in futures:
            try:
                procs.append(future.result())
            except RuntimeError as err:
                errors.append(err)
    if errors:
        for proc in procs:
            stop_node(proc)
        raise errors[0]
    return procs


class FleetClient:
    """The robots' publishers and their answers, in one node of its own context."""

    def __init__(self, context: Context, model_dir: Path, robots: list[str]):
        spec = load_model_dir(model_dir)
        self.spec, self.robots = spec, robots
        self.node = Node('aura_fleet_bench_client', context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        topic = 'features' if spec.features_in else 'image'
        self.inputs = {r: self.node.create_publisher(Image, f'/{r}/{topic}',
                                                     qos_profile_sensor_data) for r in robots}
        self.joints = {r: self.node.create_publisher(JointState, f'/{r}/joint_states',
                                                     qos_profile_sensor_data) for r in robots}
        self.sent: dict[str, dict[int, int]] = {r: {} for r in robots}    # stamp ns -> 1
        self.latencies: dict[str, list[float]] = {r: [] for r in robots}
        self._lock = threading.Lock()
        for robot in robots:
            self.node.create_subscription(DiagnosticArray, f'/{robot}/aura/gate',
                                          lambda msg, r=robot: self._on_gate(r, msg), 100)
        rng = np.random.default_rng(0)
        if spec.features_in:
            d = spec.memory.d_model
            self.payload = dict(height=1, width=d, encoding=FEATURES_ENCODING, step=4 * d,
                                data=rng.normal(size=d).astype(np.float32).tobytes())
        else:
            cam = spec.cameras[0]
            self.payload = dict(height=cam.height, width=cam.width, encoding='rgb8',
                                step=3 * cam.width,
                                data=rng.integers(0, 256, (cam.height, cam.width, 3),
                                                  dtype=np.uint8).tobytes())
        self._running = True
        self._spin = threading.Thread(target=self._spin_forever, daemon=True)
        self._spin.start()

    def _spin_forever(self) -> None:
        while self._running:
            self.executor.spin_once(timeout_sec=0.01)

    def _on_gate(self, robot: str, msg: DiagnosticArray) -> None:
        received = time.time_ns()
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        with self._lock:
            if self.sent[robot].pop(stamp, None) is not None:
                self.latencies[robot].append((received - stamp) * 1e-9)

    def wait_for_servers(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not all(self.inputs[r].get_subscription_count() > 0
                      and self.node.count_publishers(f'/{r}/aura/gate') > 0
                      for r in self.robots):
            if time.monotonic() > deadline:
                raise RuntimeError('the aura_node(s) were not discovered on this ROS_DOMAIN_ID')
            time.sleep(0.05)

    def run(self, rate_hz: float, duration_s: float) -> dict:
        """Every robot at rate_hz for duration_s (phases spread); per-robot results."""
        with self._lock:
            for robot in self.robots:
                self.sent[robot].clear()
                self.latencies[robot] = []
        count = len(self.robots)
        ticks = int(rate_hz * duration_s) * count
        names = list(self.spec.joint_names)
        start = time.monotonic()
        for k in range(ticks):
            pause = start + k / (rate_hz * count) - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            robot = self.robots[k % count]
            stamp = self.node.get_clock().now().to_msg()
            joints = JointState(name=names, position=[0.0] * len(names))
            joints.header.stamp = stamp
            self.joints[robot].publish(joints)
            message = Image(**self.payload)
            message.header.stamp = stamp
            with self._lock:
                self.sent[robot][stamp.sec * 1_000_000_000 + stamp.nanosec] = 1
            self.inputs[robot].publish(message)
        achieved = ticks / count / (time.monotonic() - start)
        time.sleep(1.0)                                   # the last answers arrive
        with self._lock:
            per_robot = {r: summarise(self.latencies[r], int(rate_hz * duration_s))
                         for r in self.robots}
        every = [x for r in self.robots for x in self.latencies[r]]
        frames = int(rate_hz * duration_s) * count
        return {'achieved_rate_hz': round(achieved, 2),
                **summarise(every, frames), 'per_robot': per_robot,
                'worst_robot_p99_ms': max((v['p99_ms'] or 0.0) for v in per_robot.values()),
                'worst_robot_dropped_pct': max(v['dropped_pct'] for v in per_robot.values())}

    def close(self) -> None:
        self._running = False
        self._spin.join()
        self.executor.shutdown()
        self.node.destroy_node()


def summarise(latencies_s: list[float], frames: int) -> dict:
    ms = np.asarray(latencies_s) * 1e3
    dropped = frames - len(latencies_s)
    out = {'frames': frames, 'answered': len(latencies_s), 'dropped': dropped,
           'dropped_pct': round(100 * dropped / max(frames, 1), 2)}
    for name, q in (('p50_ms', 50), ('p99_ms', 99)):
        out[name] = round(float(np.percentile(ms, q)), 2) if ms.size else None
    out['max_ms'] = round(float(ms.max()), 2) if ms.size else None
    return out


def measure(model_dir: Path, count: int, separate: bool, rate_hz: float = 30.0,
            duration_s: float = 10.0, warmup_s: float = 2.0, engine: str = 'torch',
            windows: int = 1) -> dict:
    """One configuration: start the server(s), warm up, measure `windows` windows of
    `duration_s` back to back, stop. The row is the window of median p99 (a shared machine's
    load comes in bursts: one window can catch one), with every window's p99 and drops beside
    it; CPU is over all windows. See the module doc."""
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    robots = robot_names(count)
    procs = start_servers(model_dir, robots, separate, engine)
    context = Context()
    rclpy.init(context=context)
    client = FleetClient(context, model_dir, robots)
    try:
        client.wait_for_servers()
        client.run(rate_hz, warmup_s)
        load_before = os.getloadavg()[0]
        cpu0, wall0 = sum(process_cpu_s(p.pid) for p in procs), time.monotonic()
        own0 = process_cpu_s(os.getpid())
        runs = [client.run(rate_hz, duration_s) for _ in range(windows)]
        cpu = sum(process_cpu_s(p.pid) for p in procs) - cpu0
        own = process_cpu_s(os.getpid()) - own0
        wall = time.monotonic() - wall0
        ranked = sorted(runs, key=lambda r: (r['p99_ms'] is None, r['p99_ms'] or 0.0))
        row = dict(ranked[(len(ranked) - 1) // 2])
        row.update(robots=count, processes=len(procs), windows=windows,
                   window_p99_ms=[r['p99_ms'] for r in runs],
                   window_dropped_pct=[r['dropped_pct'] for r in runs],
                   cpu_pct=round(100 * cpu / wall, 1),
                   client_cpu_pct=round(100 * own / wall, 1),   # it shares the cores too
                   rss_bytes=sum(process_rss_bytes(p.pid) for p in procs),
                   loadavg_1min=[round(load_before, 2), round(os.getloadavg()[0], 2)])
    finally:
        client.close()
        rclpy.try_shutdown(context=context)
        codes = [stop_node(p) for p in procs]
    row['exit_codes'] = codes
    return row


def main() -> int:
    """`python -m aura_ros.ros.bench.fleet_client MODEL_DIR N [separate]`: one row, printed."""
    model_dir, count = Path(sys.argv[1]), int(sys.argv[2])
    row = measure(model_dir, count, separate=sys.argv[3:4] == ['separate'])
    row.pop('per_robot')
    print(row)
    return 0


if __name__ == '__main__':
    signal.signal(signal.SIGINT, signal.default_int_handler)
    raise SystemExit(main())
