"""`python -m aura_ros eval so101`: closed-loop SO-101 cue-reach through ROS, AURA vs baselines.

For every method, two processes talk over DDS (loopback) exactly as on a robot:
`so101_sim` (MuJoCo, lock-step, `wait_for_command`, executing the trajectories of aura_node's
`/aura/action_chunk`) and `aura_node` (use_sim_time, the method's model directory). Each method
runs ONE never-reset episode of `--tasks` chained tasks with the same seed, so every method
sees the same goals, delays and distractors (`--reset-each-task`: the listener calls
aura_node's ~/reset whenever a task ends, as a user between tasks). A third, passive node in
this process listens to `task_events` and `/aura/gate` (and, for the timeline figure, `/image`).

Methods: the model directory's AURA memory; its trained baselines (baselines/*.safetensors
written by `python -m aura_ros train`) packaged as model directories of their own: always-write
is an AuraMemLayer checkpoint run with gate threshold 0 (a write whenever p > 0; the write count
shows it), GRU and no-memory run in the runtime's torch engine as they are. Scoring is the
simulator's (`outcomes_file`: one line per task), success with Wilson 95% intervals; writes per
task come from the gate messages (stamp -> frame -> task).
"""

import argparse
import bisect
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from aura_ros import provenance
from aura_ros.ros.bench.latency import stop_node
from aura_ros.tasks.so101_config import DEFAULT as WORLD

METHODS = ('aura', 'always_write', 'gru', 'no_memory')
ACTION_TOPIC = '/aura/action_chunk'
GATE_TOPIC = '/aura/gate'
READY = 'memory state'          # aura_node's start-up line names the state size
#: How aura_node and so101_sim are joined in a lock-step loop. run_loop passes these and
#: launch/demo.launch.py imports them, so `python -m aura_ros demo` and `ros2 launch` wire alike.
LOCKSTEP_NODE = {'use_sim_time': True,      # the stamps are the simulator's time
                 'input_qos': 'reliable',    # lock-step: a lost frame would stall the world
                 'input_depth': 2}
LOCKSTEP_SIM = {'lockstep': True, 'wait_for_command': True, 'lockstep_timeout_s': 10.0,
                'trajectory_topics': [ACTION_TOPIC]}


class EvalError(RuntimeError):
    """The closed loop could not run (a process failed, a file is missing); says which."""


def wilson(successes: int, n: int, z: float = 1.96) -> list[float]:
    """Wilson score 95% interval of a proportion: sound at 0 or n successes of few tasks,
    where the normal approximation gives a zero-width interval."""
    if n == 0:
        return [0.0, 1.0]
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def mean_ci(values) -> dict:
    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        return {'mean': None, 'ci95': [None, None]}
    half = 1.96 * x.std(ddof=1) / math.sqrt(len(x)) if len(x) > 1 else 0.0
    return {'mean': float(x.mean()), 'ci95': [float(x.mean() - half), float(x.mean() + half)]}


# -- methods as model directories -------------------------------------------------------------


def method_dir(model_dir: Path, method: str, work: Path) -> tuple[Path, Optional[float]]:
    """(model directory, gate threshold for aura_node or None = the model's) of a method.

    A baseline is its model directory baselines/<method>/ (the trainer writes it, with its own
    threshold), else the trained checkpoint baselines/<method>.safetensors in a directory of its
    own with the same model.yaml and backbone.onnx (linked, not copied)."""
    model_dir = Path(model_dir).resolve()
    if method == 'aura':
        return model_dir, None
    if method not in METHODS:
        raise EvalError(f'unknown method {method!r}; known: {", ".join(METHODS)}')
    complete = model_dir / 'baselines' / method      # a trainer's baseline model directory
    threshold = 0.0 if method == 'always_write' else None
    if (complete / 'model.yaml').is_file():
        return complete, threshold
    checkpoint = model_dir / 'baselines' / f'{method}.safetensors'
    if not checkpoint.is_file():
        raise EvalError(f'{checkpoint} does not exist: train with the {method} baseline '
                        f"(train config 'baselines: [always_write, no_memory, gru]')")
    out = Path(work) / method
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for name in ('model.yaml', 'backbone.onnx'):
        if (model_dir / name).exists():
            (out / name).symlink_to(model_dir / name)
    shutil.copyfile(checkpoint, out / 'memory.safetensors')
    return out, threshold


# -- the listener ------------------------------------------------------------------------------


@dataclass
class Trace:
    """What the listener heard: events, the gate per frame stamp, kept images."""

    events: list = field(default_factory=list)
    gate: dict = field(default_factory=dict)       # stamp (s) -> (wrote, p)
    counts: dict = field(default_factory=dict)     # stamp (s) -> aura_node's (steps, writes)
    images: dict = field(default_factory=dict)     # stamp (s) -> uint8 [H, W, 3]
    base: Optional[float] = None                   # sim time of frame 0 ('start' event)
    period: float = 1 / 30


def arm_topics(robot: str) -> tuple[str, str]:
    """(task events, gate) topics of an arm: the single loop's, or a fleet arm's under its name."""
    return (f'/{robot}/task_events', f'/{robot}{GATE_TOPIC}') if robot else \
        ('task_events', GATE_TOPIC)


def _listener(context, traces: dict, keep_frames: int,
              on_event: Optional[Callable[[dict], None]], name: str = 'so101_eval_listener',
              reset_each_task: bool = False):
    """One node hearing every arm (`traces`: robot name, '' for the single loop -> its Trace).
    A fleet arm's events reach `on_event` with its name under 'robot'. With `reset_each_task`
    it calls the arm's ~/reset when a task ends: the memory starts empty in the next task's
    rest frames, before its cue."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    from aura_ros.ros.conversions import stamp_seconds

    node = Node(name, context=context)
    reliable = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
    # the simulator keeps its events for late listeners (an arm discovered after its start)
    kept = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)

    def listen(robot: str, trace: Trace) -> None:
        reset = node.create_client(Trigger, f'/{robot}/aura/reset' if robot else '/aura/reset') \
            if reset_each_task else None

        def on_events(msg: String) -> None:
            event = json.loads(msg.data)
            if reset is not None and event['event'] in ('success', 'failure'):
                reset.call_async(Trigger.Request())
            if robot:
                event['robot'] = robot
            if event['event'] == 'start':
                trace.base = event['stamp']
                trace.period = 1.0 / float(event['config'].get('frame_hz', 30.0))
            trace.events.append(event)
            if on_event is not None:
                on_event(event)

        def on_gate(msg: DiagnosticArray) -> None:
            values = {kv.key: kv.value for kv in msg.status[0].values} if msg.status else {}
            if 'wrote' in values:
                stamp = stamp_seconds(msg.header.stamp)
                trace.gate[stamp] = (values['wrote'] == '1', float(values.get('p', 'nan')))
                trace.counts[stamp] = (int(values.get('step', 0)), int(values.get('writes', 0)))

        events, gate = arm_topics(robot)
        node.create_subscription(String, events, on_events, kept)
        node.create_subscription(DiagnosticArray, gate, on_gate, reliable)

    def on_image(msg: Image) -> None:
        trace = traces['']
        if len(trace.images) < keep_frames:
            pixels = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, 3)
            trace.images[stamp_seconds(msg.header.stamp)] = pixels.copy()

    for robot, trace in traces.items():
        listen(robot, trace)
    if keep_frames and '' in traces:
        node.create_subscription(Image, 'image', on_image, reliable)
    return node


def frame_of(trace: Trace, stamp: float) -> int:
    return int(round((stamp - (trace.base or 0.0)) / trace.period))


def trace_frames(trace: Trace) -> tuple[list, dict, dict]:
    """(events, gate by frame, images by frame) for aura_ros.ros.so101.timeline."""
    gate = {frame_of(trace, s): v for s, v in trace.gate.items()}
    images = {frame_of(trace, s): v for s, v in trace.images.items()}
    return trace.events, gate, images


# -- one closed loop ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Loop:
    """One closed-loop run: a model directory driving the simulator for `tasks` tasks."""

    model_dir: Path
    tasks: int
    seed: int = 0
    gate_threshold: Optional[float] = None
    engine: str = 'torch'
    n_pads: int = WORLD.n_pads
    size: int = WORLD.width
    delay: tuple = (WORLD.delay_min, WORLD.delay_max)
    distractor_prob: float = WORLD.distractor_prob
    lockstep_timeout_s: float = LOCKSTEP_SIM['lockstep_timeout_s']
    timeout_s: float = 3600.0
    keep_frames: int = 0
    trajectory_topics: tuple = tuple(LOCKSTEP_SIM['trajectory_topics'])  # topics the sim runs
    duration_s: float = 0.0         # also stop after this much sim time (0: tasks only)
    robots: tuple = ()              # a fleet: these arms (so101_fleet_sim) against one aura_node
    reset_each_task: bool = False   # call aura_node's ~/reset after every task, as a user would

    def __post_init__(self) -> None:
        if self.tasks < 0 or self.duration_s < 0 or not (self.tasks or self.duration_s):
            raise ValueError(f'a loop needs tasks >= 1 or duration_s > 0, got {self.tasks} '
                             f'and {self.duration_s}')
        if not (Path(self.model_dir) / 'model.yaml').is_file():
            raise EvalError(f'{self.model_dir} has no model.yaml')


def ros_args(parameters: dict) -> list[str]:
    """`-p name:=value` overrides for `--ros-args`: booleans as true/false, lists of strings
    as YAML lists."""
    def text(value) -> str:
        if isinstance(value, bool):
            return 'true' if value else 'false'
        if isinstance(value, (list, tuple)):
            return '[' + ', '.join(f'"{v}"' if isinstance(v, str) else str(v)
                                   for v in value) + ']'
        return str(value)
    return [arg for name, value in parameters.items() for arg in ('-p', f'{name}:={text(value)}')]


def _process(module: str, arguments: list[str], env: dict, log: Path) -> subprocess.Popen:
    handle = open(log, 'w')
    return subprocess.Popen([sys.executable, '-u', '-m', module, '--ros-args', *arguments],
                            env=env, stdout=handle, stderr=subprocess.STDOUT)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return '\n'.join(path.read_text(errors='replace').splitlines()[-lines:])
    except OSError:
        return ''


# Set by `main`'s handler of SIGINT, SIGTERM and SIGHUP: every running loop stops its aura_node
# and simulator and ends with an EvalError. A SIGTERM used to end the eval alone, leaving both
# children running on the loop's ROS domain, where a later eval on that domain met them.
INTERRUPTED = threading.Event()


def _check_interrupted() -> None:
    if INTERRUPTED.is_set():
        raise EvalError('interrupted: aura_node and the simulator were stopped')


def _wait_ready(node: subprocess.Popen, listener, log: Path, deadline: float,
                gate_topics: tuple = (GATE_TOPIC,)) -> None:
    """Until aura_node said it is up and the listener matched its gate publishers (so the
    simulator, started next, meets a node whose every step is heard)."""
    while not (READY in log.read_text(errors='replace')
               and all(listener.count_publishers(t) >= 1 for t in gate_topics)):
        _check_interrupted()
        if node.poll() is not None:
            raise EvalError(f'aura_node exited with code {node.returncode}:\n' + _tail(log))
        if time.monotonic() > deadline:
            raise EvalError('aura_node did not come up within 120 s:\n' + _tail(log))
        time.sleep(0.1)


def loop_env(domain: Optional[int] = None) -> dict:
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST', PYTHONUNBUFFERED='1')
    if domain is not None:
        env['ROS_DOMAIN_ID'] = str(domain)
    env.setdefault('ROS_DOMAIN_ID', str(101 + os.getpid() % 100))
    env.setdefault('MUJOCO_GL', 'egl')
    return env


def run_loop(loop: Loop, work: Path, env: Optional[dict] = None,
             on_event: Optional[Callable[[dict], None]] = None,
             log: Optional[Callable[[str], None]] = None,
             trace: Optional[Trace] = None) -> tuple[dict, Trace]:
    """Run aura_node + so101_sim (two processes) until `loop.tasks` tasks ended.

    Returns (result, trace): result holds the per-task outcomes (the simulator's), writes per
    task, the simulator's summary and aura_node's exit code; the trace what the listener heard.
    """
    if loop.robots:
        raise ValueError('a loop with robots is a fleet: run_fleet_loop')
    trace = trace if trace is not None else Trace()
    result = _run_arms(loop, work, env, {'': trace}, on_event)['']
    if log:
        log(f'  {result["successes"]}/{result["tasks"]} successes, {result["writes"]} writes in '
            f'{result["steps"]} steps, {result["wall_s"]:.0f} s')
    return result, trace


def run_fleet_loop(loop: Loop, work: Path, env: Optional[dict] = None,
                   on_event: Optional[Callable[[dict], None]] = None,
                   traces: Optional[dict] = None) -> dict:
    """Run one aura_node serving `loop.robots` (its `robots` parameter) + so101_fleet_sim (one
    simulator per arm, each under its name) until every arm ended `loop.tasks` tasks.

    Returns {'robots': {arm: its result, as run_loop's}, 'tasks', 'successes', 'success'} (the
    totals over the arms); `on_event` gets every arm's events, named by 'robot'; `traces`, when
    given, is filled with each arm's Trace."""
    if not loop.robots:
        raise ValueError('a fleet loop needs robots')
    traces = traces if traces is not None else {}
    traces.update({robot: Trace() for robot in loop.robots})
    results = _run_arms(loop, work, env, traces, on_event)
    tasks = sum(r['tasks'] for r in results.values())
    wins = sum(r['successes'] for r in results.values())
    return {'robots': results, 'tasks': tasks, 'successes': wins,
            'success': {'mean': wins / tasks if tasks else None, 'ci95': wilson(wins, tasks)},
            'wall_s': max(r['wall_s'] for r in results.values())}


def _run_arms(loop: Loop, work: Path, env: Optional[dict], traces: dict,
              on_event: Optional[Callable[[dict], None]]) -> dict:
    """The processes of one loop (aura_node and the simulator: so101_sim, or so101_fleet_sim
    for a fleet) and the scoring of every arm: {arm ('' alone): result}."""
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor

    from aura_ros.ros.robot import robot_state_file

    env = env or loop_env()
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    outcomes = work / 'outcomes.jsonl'
    files = {robot: Path(robot_state_file(str(outcomes), robot)) for robot in traces}
    for path in files.values():
        path.unlink(missing_ok=True)
    fleet = {'robots': list(loop.robots)} if loop.robots else {}
    node_args = ros_args({'model_dir': Path(loop.model_dir).resolve(), **LOCKSTEP_NODE,
                          'memory_engine': loop.engine, 'device': 'cpu', **fleet,
                          **({} if loop.gate_threshold is None
                             else {'gate_threshold': loop.gate_threshold})})
    # a fleet arm runs its own chunk topic: relative, under the arm's namespace
    topics = [t.lstrip('/') if loop.robots else t for t in loop.trajectory_topics]
    sim_args = ros_args({**LOCKSTEP_SIM, 'lockstep_timeout_s': loop.lockstep_timeout_s,
                         'trajectory_topics': topics, **fleet,
                         'max_tasks': loop.tasks, 'duration_s': float(loop.duration_s),
                         'seed': loop.seed, 'n_pads': loop.n_pads, 'image_width': loop.size,
                         'image_height': loop.size, 'delay_min': loop.delay[0],
                         'delay_max': loop.delay[1],
                         'distractor_prob': float(loop.distractor_prob),
                         'outcomes_file': outcomes})
    sim_module = 'aura_ros.ros.so101.fleet_sim' if loop.robots else 'aura_ros.ros.so101.sim'
    context = Context()
    rclpy.init(context=context, domain_id=int(env['ROS_DOMAIN_ID']))   # the loop's domain
    executor = SingleThreadedExecutor(context=context)
    listener = _listener(context, traces, loop.keep_frames, on_event,
                         name=f'so101_eval_listener_{env["ROS_DOMAIN_ID"]}',
                         reset_each_task=loop.reset_each_task)
    executor.add_node(listener)
    stop = threading.Event()
    spinner = threading.Thread(target=lambda: [executor.spin_once(timeout_sec=0.05)
                                               for _ in iter(stop.is_set, True)], daemon=True)
    spinner.start()
    node = sim = None
    wall = time.monotonic()
    try:
        node = _process('aura_ros.ros.node', node_args, env, work / 'aura_node.log')
        _wait_ready(node, listener, work / 'aura_node.log', deadline=wall + 120,
                    gate_topics=tuple(arm_topics(robot)[1] for robot in traces))
        sim = _process(sim_module, sim_args, env, work / 'so101_sim.log')
        while sim.poll() is None:
            _check_interrupted()
            if node.poll() is not None:
                raise EvalError(f'aura_node exited with code {node.returncode}:\n'
                                + _tail(work / 'aura_node.log'))
            if time.monotonic() - wall > loop.timeout_s:
                raise EvalError(f'the closed loop did not finish within {loop.timeout_s:.0f} s')
            time.sleep(0.2)
        if sim.returncode != 0:
            raise EvalError(f'so101_sim exited with code {sim.returncode}:\n'
                            + _tail(work / 'so101_sim.log'))
        elapsed = time.monotonic() - wall
        deadline = time.monotonic() + 5.0          # the last events and gate messages arrive
        while time.monotonic() < deadline and not all(
                any(e['event'] == 'summary' for e in trace.events) for trace in traces.values()):
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        node_code = stop_node(node) if node is not None else None
        if sim is not None:
            stop_node(sim)
        stop.set()
        spinner.join(timeout=5)
        executor.remove_node(listener)
        listener.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown(context=context)
    results = {}
    for robot, trace in traces.items():
        if not files[robot].is_file():
            raise EvalError(f'so101_sim wrote no outcomes ({files[robot]}):\n'
                            + _tail(work / 'so101_sim.log'))
        tasks = [json.loads(line) for line in files[robot].read_text().splitlines()
                 if line.strip()]
        summary = next((e for e in trace.events if e['event'] == 'summary'), {})
        result = score(tasks, trace, summary, counters=not loop.reset_each_task)
        result.update(wall_s=round(elapsed, 1), aura_node_exit=node_code,
                      lockstep_timeouts=summary.get('lockstep_timeouts'),
                      rejected_trajectories=summary.get('rejected'),
                      sim_frames=summary.get('frames'))
        results[robot] = result
    return results


def score(tasks: list[dict], trace: Trace, summary: dict, counters: bool = True) -> dict:
    """Success (Wilson 95%), reasons, writes per task (gate frames assigned to tasks, and each
    task's `write_frames`). Without `counters` (aura_node's restart at every reset) a task's
    writes are its gate messages'."""
    if tasks:       # frame 0's sim time, from the simulator's own stamps (the listener may
        trace.base = tasks[0]['stamp'] - tasks[0]['end_frame'] * trace.period  # miss 'start')
    writes_at = sorted(frame_of(trace, s) for s, (wrote, _) in trace.gate.items() if wrote)
    # aura_node's cumulative counters: exact even if a gate message was missed
    counts = sorted((frame_of(trace, s), c) for s, c in trace.counts.items())
    frames = [f for f, _ in counts]

    def writes_before(frame: int) -> int:
        i = bisect.bisect_left(frames, frame)
        return counts[i - 1][1][1] if i else 0

    start = 0
    for task in tasks:
        end = task['end_frame']
        cue = range(task['cue_frame'], task['cue_frame'] + 6)
        task['writes'] = writes_before(end) - writes_before(start)
        task['writes_at_cue'] = sum(f in cue for f in writes_at)
        # episode frames of the writes the gate topic reported in this task, to tell what was
        # written over the cue before GO from what was written after it
        task['write_frames'] = [f for f in writes_at if start <= f < end]
        if not counters:
            task['writes'] = len(task['write_frames'])
        start = end
    steps, writes = counts[-1][1] if counts and counters else (
        len(trace.gate), sum(wrote for wrote, _ in trace.gate.values()))
    wins = sum(bool(t['success']) for t in tasks)
    reasons: dict = {}
    for t in tasks:
        reasons[t['reason']] = reasons.get(t['reason'], 0) + 1
    return {'tasks': len(tasks), 'successes': wins,
            'success': {'mean': wins / len(tasks) if tasks else None,
                        'ci95': wilson(wins, len(tasks))},
            'reasons': reasons, 'steps': steps, 'writes': writes,
            'write_rate': writes / steps if steps else None,
            'gate_messages': len(trace.gate),
            'writes_per_task': mean_ci([t['writes'] for t in tasks]),
            'cue_written': sum(t['writes_at_cue'] > 0 for t in tasks),
            'outcomes': tasks}


# -- the evaluation ----------------------------------------------------------------------------


def markdown(results: dict) -> str:
    """The results table (docs/results/so101_closed_loop.md)."""
    rows = ['| method | tasks | success [95% CI] | wrong pad | early | timeout | writes / task '
            '| write rate | cue written | wall |',
            '|---|---:|---|---:|---:|---:|---:|---:|---:|---:|']
    for method, r in results['methods'].items():
        if 'error' in r:
            rows.append(f'| {method} | - | not run: {r["error"]} | | | | | | | |')
            continue
        lo, hi = r['success']['ci95']
        reasons = r['reasons']
        if r.get('model_dir', results['model_dir']) != results['model_dir']:
            method = f'{method} (model `{r["model_dir"]}`, same backbone)'
        rate = '-' if r['write_rate'] is None else f'{r["write_rate"]:.3f}'
        rows.append(f'| {method} | {r["tasks"]} | **{r["success"]["mean"]:.0%}** '
                    f'[{lo:.0%}, {hi:.0%}] | {reasons.get("wrong_pad", 0)} | '
                    f'{reasons.get("early", 0)} | {reasons.get("timeout", 0)} | '
                    f'{r["writes_per_task"]["mean"]:.1f} | {rate} | '
                    f'{r["cue_written"]}/{r["tasks"]} | {r["wall_s"]:.0f} s |')
    chance = 1 / results['n_pads']
    return '\n'.join([
        '# SO-101 cue-reach, closed loop through ROS', '',
        f'Command: `{results["command"]}`  ', f'Machine: {results["machine"]}  ',
        f'Loop: {results["loop"]}  ',
        f'Model: `{results["model_dir"]}`; seed {results["seed"]} (every method sees the same '
        f'goals, delays and distractors); {results["n_pads"]} pads, so a memoryless guess '
        f'succeeds {chance:.0%} of the time.', '',
        *rows, '',
        'wrong pad = forgot or confused the cue; early = left home before GO; timeout = did not '
        'hold over any pad within 3 s of GO. Writes are counted from `/aura/gate`; "cue written" '
        '= tasks with a write in the cue frames (onset .. onset + 5). Always-write runs its '
        'trained checkpoint with gate threshold 0, GRU and no-memory their own checkpoints, all '
        'through aura_node.', ''])


def evaluate(args: argparse.Namespace, log=print) -> dict:
    model_dir = Path(args.model_dir)
    if not (model_dir / 'model.yaml').is_file():
        raise EvalError(f'{model_dir} is not a model directory (no model.yaml)')
    methods = [m.strip() for m in args.methods.split(',') if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise EvalError(f'unknown method(s) {", ".join(unknown)}; known: {", ".join(METHODS)}')
    out = Path(args.out)
    command = 'python -m aura_ros ' + ' '.join(sys.argv[1:]) if sys.argv[1:2] == ['eval'] \
        else f'python -m aura_ros eval so101 --model-dir {args.model_dir} --tasks {args.tasks}'
    results = {**provenance.header(command, 'CPU VM shared with other jobs, torch CPU, MuJoCo '
                                            'EGL software rendering'),
               'loop': 'so101_sim (MuJoCo, lock-step, wait_for_command) <-> aura_node '
                       '(use_sim_time) as two processes over DDS (loopback); '
                       + ('~/reset called after every task (a new episode per task)'
                          if getattr(args, 'reset_each_task', False)
                          else 'one never-reset episode per method'),
               'reset_each_task': bool(getattr(args, 'reset_each_task', False)),
               'model_dir': str(args.model_dir), 'seed': args.seed, 'n_pads': args.pads,
               'delay_frames': [min(30, args.delay_max), args.delay_max],
               'distractor_prob': args.distractor_prob,
               'tasks_per_method': args.tasks, 'backbone_sha256': _sha256(model_dir /
                                                                          'backbone.onnx'),
               'methods': {}}
    timeline = Path(args.timeline) if args.timeline else None
    base_domain = int(loop_env()['ROS_DOMAIN_ID'])

    def progress(method: str) -> Callable[[dict], None]:
        done = [0, 0]

        def on_event(event: dict) -> None:
            if event['event'] in ('success', 'failure'):
                done[0] += 1
                done[1] += bool(event['success'])
                if done[0] % 10 == 0:
                    log(f'{method}: {done[0]}/{args.tasks} tasks, {done[1]} successes')
        return on_event

    def one(index: int, method: str, tmp: Path) -> None:
        log(f'eval so101: {method}, {args.tasks} tasks (seed {args.seed})')
        try:
            _check_interrupted()
            directory, threshold = method_dir(model_dir, method, tmp / 'models')
            loop = Loop(directory, args.tasks, seed=args.seed, gate_threshold=threshold,
                        n_pads=args.pads, size=args.size,
                        delay=(min(WORLD.delay_min, args.delay_max), args.delay_max),
                        distractor_prob=args.distractor_prob,
                        reset_each_task=bool(getattr(args, 'reset_each_task', False)),
                        keep_frames=args.keep_frames if method == 'aura' and timeline else 0,
                        trajectory_topics=tuple(getattr(args, 'action_topics', '')
                                                .split(',') if getattr(args, 'action_topics', '')
                                                else (ACTION_TOPIC,)))
            # each loop on a DDS domain of its own: loops may run side by side (--jobs)
            env = loop_env(100 + (base_domain + index) % 132)
            result, trace = run_loop(loop, tmp / method, env=env, on_event=progress(method),
                                     log=lambda text: log(f'{method}: {text.strip()}'))
        except EvalError as err:
            log(f'  {method} not run: {err}')
            results['methods'][method] = {'error': str(err).splitlines()[0]}
            return
        result['gate_threshold'] = threshold
        result['model_dir'] = str(args.model_dir)
        results['methods'][method] = result
        if method == 'aura' and timeline:
            from aura_ros.ros.so101.timeline import plot_timeline

            spec_threshold = threshold if threshold is not None else _threshold(model_dir)
            try:
                plot_timeline(*trace_frames(trace), spec_threshold, timeline,
                              title=f'AURA through ROS on SO-101 (seed {args.seed}): camera '
                                    'frames of one task and the write gate')
                log(f'eval so101: wrote {timeline}')
            except ValueError as err:
                log(f'eval so101: no timeline: {err}')

    with tempfile.TemporaryDirectory(prefix='so101_eval_') as tmp:
        with ThreadPoolExecutor(max_workers=max(1, getattr(args, 'jobs', 1))) as pool:
            for future in [pool.submit(one, i, m, Path(tmp)) for i, m in enumerate(methods)]:
                future.result()
    _check_interrupted()                # no results file from an interrupted eval
    results['methods'] = {m: results['methods'][m] for m in methods}
    if getattr(args, 'append', False) and out.is_file():
        results = _merge(json.loads(out.read_text()), results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + '\n')
    out.with_suffix('.md').write_text(markdown(results))
    log(f'eval so101: wrote {out} and {out.with_suffix(".md")}')
    log(markdown(results))
    return results


SAME_RUN = ('backbone_sha256', 'seed', 'n_pads', 'delay_frames', 'tasks_per_method')


def _merge(old: dict, new: dict) -> dict:
    """--append: the methods of `new` added to (or replacing those of) an earlier results file
    of the same set-up; a different set-up is refused, naming the field."""
    diffs = [f'{k}: {old.get(k)!r} there, {new[k]!r} now' for k in SAME_RUN
             if old.get(k) != new[k]]
    if diffs:
        raise EvalError('cannot --append to a results file of another set-up (' +
                        '; '.join(diffs) + ')')
    commands = old.get('commands', [old['command']])
    merged = {**old, 'methods': {**old['methods'], **new['methods']},
              'commands': commands + [new['command']]}
    merged['command'] = ' && '.join(merged['commands'])
    return merged


def _sha256(path: Path) -> Optional[str]:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _threshold(model_dir: Path) -> float:
    from aura_ros.runtime.model_dir import load_model_dir

    return float(load_model_dir(model_dir).memory.gate_threshold)


def main(args: argparse.Namespace) -> int:
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    INTERRUPTED.clear()
    before = {s: signal.signal(s, lambda *_: INTERRUPTED.set()) for s in signals}
    try:
        evaluate(args)
    except EvalError as err:
        print(f'eval so101: {err}', file=sys.stderr)
        return 130 if INTERRUPTED.is_set() else 2
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
    return 0

