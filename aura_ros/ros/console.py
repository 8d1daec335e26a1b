"""Entry points of the console scripts (aura_node, aura_so101_sim): the signal handler first.

A console script imports this module and calls one function at once. Each installs the
deferring SIGINT/SIGTERM/SIGHUP handler (interrupt.py) before it imports its node's module
(torch, rclpy, MuJoCo: seconds on a busy machine), so a Ctrl-C from then on ends the process
with exit 0 and no traceback; once main() returned, signals are ignored (the exit is under
way). Keep this module free of heavy imports.
"""

from aura_ros.ros.interrupt import INTERRUPT


def aura_node() -> int:
    INTERRUPT.install()
    from aura_ros.ros.node import main

    try:
        return main()
    finally:
        INTERRUPT.ignore()


def aura_so101_sim() -> int:
    INTERRUPT.install()
    from aura_ros.ros.so101.sim import main

    try:
        return main()
    finally:
        INTERRUPT.ignore()
