"""Remap rules that fit no input or output of the model: warned about, not silently ignored.

`ros2 launch aura_ros aura.launch.py outputs:='arm:=/arm_controller/joint_trajectory'` becomes the
rule `-r ~/arm:=...`; for a model without an `arm` group the rule matches nothing and the chunks
go to a topic no controller reads. The same for `cameras:=` naming a camera the model lacks.
rclpy keeps no list of a node's remap rules, so they are read from the ROS arguments the node
was started with (the process's command line, and a node's own `cli_args`).
"""

from typing import Sequence

PRIVATE_NAMES = ('gate', 'reset')      # the node's own ~/ topics and services besides groups


def remap_rules(args: Sequence[str], node_name: str) -> list[tuple[str, str]]:
    """(from, to) of every `-r`/`--remap` rule between `--ros-args` and `--` that applies to
    the node `node_name` (rules prefixed `othernode:` are left out, `__node`/`__ns` too)."""
    rules, inside, i = [], False, 0
    while i < len(args):
        arg = args[i]
        if arg == '--ros-args':
            inside = True
        elif arg == '--':
            inside = False
        elif inside and arg in ('-r', '--remap') and i + 1 < len(args):
            i += 1
            source, sep, target = args[i].partition(':=')
            node, colon, name = source.rpartition(':')
            if sep and (not colon or node == node_name) and not name.startswith('__'):
                rules.append((name, target))
        i += 1
    return rules


def is_model_name(source: str) -> bool:
    """A rule for the model's own names, which unfit_rules judges: `~/...` or a camera input."""
    name = source.removesuffix('/compressed')
    return source.startswith('~/') or name == 'image' or name.endswith('/image')


def unfit_rules(rules: Sequence[tuple[str, str]], cameras: Sequence[str],
                groups: Sequence[str], features_in: bool) -> list[str]:
    """A warning for each rule naming an output group or camera the model does not have."""
    outputs = list(groups) or ['action_chunk']
    inputs = (['features'] if features_in else
              ['image'] if len(cameras) == 1 else [f'{c}/image' for c in cameras])
    found = []
    for source, target in rules:
        name = source.removesuffix('/compressed')
        if source.startswith('~/'):
            if source[2:] not in (*outputs, *PRIVATE_NAMES):
                found.append(f'remap {source}:={target} names no output of this model: its '
                             f'output group(s) are {", ".join(outputs)} (outputs:=), so nothing '
                             f'is published on {target}')
        elif (name == 'image' or name.endswith('/image')) and name not in inputs:
            what = (f'camera(s) {", ".join(cameras)} on {", ".join(inputs)}' if cameras else
                    'no camera (features in)')
            found.append(f'remap {source}:={target} names no input of this model: it has '
                         f'{what} (cameras:=, image:=), so {target} is not read')
    return found
