"""aura_node's worker thread: waits for what the callbacks handed over, then resets, sets the
gate threshold and steps; the one thread that touches the runtime and its memory state.

The callbacks and the worker share the node's lock (`node.lock`, a Condition): a callback hands
over under it and notifies; the worker takes everything there is in one go, then works outside
it. Anything escaping the work is fatal and loud (`fail`): never a node that says `active` but
steps no more.
"""

import threading
import traceback
from typing import Optional

from aura_ros.ros import diagnostics
from aura_ros.ros.stepping import Stepper


class Worker:
    """The work of `node` (an AuraNode): resets, threshold changes and steps, in that order."""

    def __init__(self, node):
        self.node = node
        self.stepper = Stepper(node)
        self.stopping = False
        self.busy = False                          # stepping now (outside the lock)
        self.threshold_update: Optional[float] = None
        self.clock_jumped = False                  # the ROS clock went back since the last take

    def start(self) -> threading.Thread:
        """A new worker thread, started."""
        self.stopping = False
        thread = threading.Thread(target=self.run, name='aura_worker', daemon=True)
        thread.start()
        return thread

    def run(self) -> None:
        node, lock = self.node, self.node.lock
        while True:
            with lock:
                while (not any(r.frame is not None or r.reset_request is not None
                               for r in node.robots)
                       and self.threshold_update is None and not self.stopping):
                    lock.wait()
                if self.stopping:
                    return
                resets = []
                for robot in node.robots:
                    reset, robot.reset_request = robot.reset_request, None
                    if reset is not None:
                        resets.append((robot, reset))
                    if reset is not None or self.clock_jumped:
                        # a still-valid joint state survives a reset: it is the robot's
                        robot.last_stamp = -float('inf')
                self.clock_jumped = False
                threshold, self.threshold_update = self.threshold_update, None
                # every robot with a new observation since the last step: one batched step
                frames = [(robot, robot.frame, robot.joints) for robot in node.robots
                          if robot.frame is not None]
                for robot, _, _ in frames:
                    robot.frame = None
                self.busy = True
            try:
                self._work(resets, threshold, frames)
            except BaseException as err:  # noqa: B036 - a dead worker must not look alive
                self.fail(err)
                return
            finally:
                with lock:
                    self.busy = False
                    lock.notify_all()

    def _work(self, resets, threshold, frames) -> None:
        node, runtime = self.node, self.node.runtime
        for robot, reset in resets:
            reset['summary'] = runtime.reset(robot.row)
            robot.counters.latencies.clear()
            robot.last_gate = {}
            robot.gate_topics.view.clear()
            robot.save_state(runtime, node.problem_log)
            reset['event'].set()
        if threshold is not None:
            own = threshold < 0                 # negative: back to the model's own
            threshold = node.spec.memory.gate_threshold if own else threshold
            runtime.set_gate_threshold(threshold)
            node.get_logger().info(f'gate threshold set to {threshold}'
                                   + (" (the model's)" if own else ''))
        if frames:
            self.stepper.step(frames)

    def fail(self, err: BaseException) -> None:
        """The worker cannot go on: say so loudly (log, /diagnostics ERROR at once), then let
        the executor take the lifecycle through error processing to finalized, and aura_node
        exit 1 (the node's failure guard). Never a node that says `active` but steps no more."""
        node = self.node
        node.failure = f'{type(err).__name__}: {err}'
        node.get_logger().fatal(
            f'the worker failed and can take no more steps ({node.failure}); going to error '
            f'processing, aura_node exits 1\n{"".join(traceback.format_exception(err))}')
        with node.lock:
            self.stopping = True
        try:
            node.health_pub.publish(diagnostics.message(node))
        except Exception:  # noqa: BLE001 - shutting down already: the log said it
            pass
        node.failure_guard.trigger()

    def stop(self) -> None:
        """Ask the thread to end after the current step (the caller joins it)."""
        with self.node.lock:
            self.stopping = True
            self.node.lock.notify_all()
