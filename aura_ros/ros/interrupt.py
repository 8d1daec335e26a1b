"""The SIGINT/SIGTERM/SIGHUP handler of the console-script nodes: a signal is held while the
node cannot act on it.

Installed first by the entry module of each console script (aura_ros/ros/console.py), and at
import when `python -m aura_ros.ros.node` or `... .so101.sim` is the program: before torch, rclpy
and MuJoCo load (seconds on a busy machine). A KeyboardInterrupt raised inside those imports
printed a traceback, and one swallowed by some library's bare `except:` left the node running,
deaf to that Ctrl-C. While aura_node is being built it has no name yet in main(), so an
interrupt there would skip the final save; the signal is held until the node exists, then
raised (main() installs rclpy's own handlers only then: they shut the context down at once,
which broke the half-built node with a traceback). The simulator holds every signal and polls
`pending` (its summary needs a live context). During shutdown a second Ctrl-C is held too, so
the save finishes quietly. Importing this module elsewhere (tests) changes nothing.
"""

import os
import signal
import sys


class DeferredInterrupt:
    """While `deferring`, a signal only marks itself pending; otherwise KeyboardInterrupt."""

    def __init__(self):
        self.deferring = True
        self.pending = False

    def __call__(self, signum, frame) -> None:
        if self.deferring:
            self.pending = True
        else:
            raise KeyboardInterrupt

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self)

    def ignore(self) -> None:
        """Exiting: ignore further signals. The interpreter resets the handlers it knows to the
        default (killing) action while it tears down, so a second Ctrl-C then ended a clean
        exit with -2."""
        self.deferring = True
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)

    def release(self) -> None:
        """Stop deferring; a signal that came meanwhile is raised now."""
        self.deferring = False
        if self.pending:
            raise KeyboardInterrupt


INTERRUPT = DeferredInterrupt()
PROGRAMS = {'aura_node': 'node.py', 'aura_so101_sim': os.path.join('so101', 'sim.py')}
if os.path.basename(sys.argv[0]) in PROGRAMS or any(
        sys.argv[0].endswith(os.path.join('aura_ros', 'ros', module))
        for module in PROGRAMS.values()):
    INTERRUPT.install()
