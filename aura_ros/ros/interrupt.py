"""aura_node's SIGINT/SIGTERM/SIGHUP handler: a signal is held while the node cannot act on it.

Imported by aura_ros/ros/node.py before anything heavy. When aura_node is the program (`aura_node`
or `python -m aura_ros.ros.node`) it is installed at once, before torch and rclpy load (seconds on
a busy machine): a KeyboardInterrupt raised inside those imports printed a traceback, and one
swallowed by some library's bare `except:` left the node running, deaf to that Ctrl-C. While the
node is being built it has no name yet in main(), so an interrupt there would skip the final save;
the signal is held until the node exists, then raised (main() installs rclpy's own handlers only
then: they shut the context down at once, which broke the half-built node with a traceback).
During shutdown a second Ctrl-C is held too, so the save finishes quietly. Importing this module
elsewhere (tests) changes nothing.
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

    def release(self) -> None:
        """Stop deferring; a signal that came meanwhile is raised now."""
        self.deferring = False
        if self.pending:
            raise KeyboardInterrupt


INTERRUPT = DeferredInterrupt()
if os.path.basename(sys.argv[0]) == 'aura_node' \
        or sys.argv[0].endswith(os.path.join('aura_ros', 'ros', 'node.py')):
    INTERRUPT.install()
