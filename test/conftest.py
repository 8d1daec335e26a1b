"""Test harness: keeps DDS on loopback and provides rclpy fixtures for ROS tests.

The environment is set here, at import, before any test module can import rclpy:
ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST always, and a ROS_DOMAIN_ID of this run's own (from the
process id, 1..100) so parallel runs on one machine do not hear each other. Set
AURA_TEST_DOMAIN_ID to choose the domain yourself.

rclpy is imported only inside the fixtures, so tests that use none of them run without ROS; the
ones that do are skipped when rclpy is not installed.
"""

import os
import time

import pytest

os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ['ROS_DOMAIN_ID'] = os.environ.get('AURA_TEST_DOMAIN_ID') or str(1 + os.getpid() % 100)
os.environ.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')
os.environ.setdefault('MUJOCO_GL', 'egl')   # headless MuJoCo, whichever test imports it first

ROS_SKIP_REASON = 'rclpy not installed (pip install .[ros] or source a ROS 2 install)'


@pytest.fixture(scope='session')
def rclpy_context():
    """An initialised rclpy Context of its own for the whole test session."""
    try:
        import rclpy
        from rclpy.context import Context
    except ImportError:
        pytest.skip(ROS_SKIP_REASON)
    context = Context()
    rclpy.init(context=context)
    yield context
    rclpy.try_shutdown(context=context)


@pytest.fixture
def executor(rclpy_context):
    """A single-threaded executor on the session context, shut down after the test."""
    from rclpy.executors import SingleThreadedExecutor

    spinner = SingleThreadedExecutor(context=rclpy_context)
    yield spinner
    spinner.shutdown()


@pytest.fixture
def make_node(rclpy_context, executor):
    """make_node(name, node_class=Node, **kwargs) -> a node added to `executor`, destroyed after
    the test."""
    from rclpy.node import Node

    nodes = []

    def make(name, node_class=Node, **kwargs):
        node = node_class(name, context=rclpy_context, **kwargs)
        executor.add_node(node)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        executor.remove_node(node)
        node.destroy_node()


def spin_until(predicate, timeout, executor, what=None):
    """Spin `executor` until predicate() is true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f'timed out after {timeout:.1f} s waiting for {what or predicate}')
        executor.spin_once(timeout_sec=min(0.05, remaining))


@pytest.fixture
def wait_for():
    """The spin_until helper: wait_for(predicate, timeout, executor, what=None)."""
    return spin_until


# The tiny model's action period. Its chunk (3 points) then spans 0.25-0.75 s after the frame, so
# on a loaded machine a step is never so late that aura_node leaves out the whole chunk as past
# (tests count on one chunk per step); timing itself is tested with a 30 Hz model.
TINY_PERIOD_S = 0.25


@pytest.fixture(scope='session')
def tiny_model_dir(tmp_path_factory):
    """A complete, randomly initialised model directory small enough for fast tests.

    The gate starts undecided (bias 0) so both writes and skips happen with random inputs.
    """
    import torch

    from aura_ros.memory import AuraMemLayer, MemoryConfig
    from aura_ros.runtime import ImageSpec, ModelSpec, SmallCNN, save_model_dir

    torch.manual_seed(0)
    memory_config = MemoryConfig(d_model=32, d_key=8, d_val=8, d_action=2, chunk=3,
                                 gate_init_bias=0.0)
    spec = ModelSpec(name='tiny', cameras=ImageSpec(width=32, height=24, mean=(0.5, 0.5, 0.5),
                                                    std=(0.25, 0.25, 0.25)),
                     joint_names=('shoulder', 'elbow'), action_names=('shoulder', 'elbow'),
                     action_period_s=TINY_PERIOD_S, memory=memory_config)
    backbone = SmallCNN(24, 32, 2, 32)
    out = tmp_path_factory.mktemp('tiny_model')
    save_model_dir(out, spec, backbone, AuraMemLayer(memory_config))
    return out


@pytest.fixture(scope='module')
def one_torch_thread():
    """Runtime tests run torch on one thread, as aura_node does (inference_threads = 1)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def isolated_export_cache(tmp_path, monkeypatch):
    """Exported memory steps go to this test's own cache, not ~/.cache/aura_ros."""
    monkeypatch.setenv('AURA_ROS_CACHE', str(tmp_path / 'cache'))


def handles_sighup(pid: int) -> bool:
    """Whether process `pid` catches SIGHUP (Linux /proc): our deferring handler
    (aura_ros/ros/interrupt.py) is then installed. Python and rclpy never catch SIGHUP."""
    import signal

    with open(f'/proc/{pid}/status') as status:
        caught = next(line for line in status if line.startswith('SigCgt:')).split()[1]
    return bool(int(caught, 16) >> (signal.SIGHUP - 1) & 1)


def interrupt_process(args, after_s=0.0, signum=None, ready_line=None, again_s=None, env=None,
                      timeout=120):
    """Start `args`, wait until its signal handler is installed (and, with `ready_line`, until
    that text was printed), sleep `after_s`, send `signum` (SIGINT) (and again `again_s` later);
    returns (exit code, output). Waiting for the handler, not a fixed time, keeps this
    independent of the machine's speed: before it, only the interpreter's own start-up runs."""
    import signal
    import subprocess

    if not os.path.isdir('/proc/self'):
        pytest.skip('needs Linux /proc to see when the signal handler is installed')
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, 'PYTHONUNBUFFERED': '1', **(env or {})})
    lines = []
    try:
        deadline = time.monotonic() + timeout
        while not handles_sighup(proc.pid):
            assert proc.poll() is None and time.monotonic() < deadline, \
                'the signal handler was never installed: ' + proc.communicate()[0]
            time.sleep(0.002)
        if ready_line:
            for line in proc.stdout:
                lines.append(line)
                if ready_line in line:
                    break
            assert ready_line in ''.join(lines), ''.join(lines)
        time.sleep(after_s)
        proc.send_signal(signum or signal.SIGINT)
        if again_s is not None:
            time.sleep(again_s)
            if proc.poll() is None:
                proc.send_signal(signum or signal.SIGINT)
        output, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, ''.join(lines) + (output or '')
