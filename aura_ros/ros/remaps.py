"""Remap rules that match nothing: said at start instead of publishing somewhere unexpected.

`-r ~/arm:=/arm_controller/joint_trajectory`, unquoted in bash, reaches the node as
`/home/user/arm:=...` (the shell expands `~`); the rule then matches nothing, the node publishes
on `/aura/arm`, and ROS says nothing. rcl does not tell which rules matched, so this checks the
outcome: a rule for this node whose right side names none of the node's topics or services
(after start-up, when every topic exists) matched nothing, and is named in a warning.
"""

import os
from typing import Iterable

REMAP_FLAGS = ('-r', '--remap')
COMPRESSED = '/compressed'


def remap_rules(argv: Iterable[str], node_name: str) -> list[str]:
    """The `from:=to` remap rules in `--ros-args` sections of argv that apply to `node_name`
    (no node prefix, or `node_name:`), without special rules such as `__ns:=`."""
    rules, in_ros, take = [], False, False
    for arg in argv:
        if arg == '--ros-args':
            in_ros = True
        elif arg == '--':
            in_ros = False
        elif in_ros and take:
            rules.append(arg)
            take = False
        elif in_ros and arg in REMAP_FLAGS:
            take = True
    out = []
    for rule in rules:
        left, sep, right = rule.partition(':=')
        if not sep:
            continue
        prefix, colon, name = left.rpartition(':')
        if colon and prefix not in (node_name,):
            continue                       # another node's rule
        name = name if colon else left
        if not name.startswith('__'):
            out.append(f'{name}:={right}')
    return out


def unmatched_remaps(node, argv: Iterable[str]) -> list[str]:
    """Warnings for the rules of `argv` (for this node) that renamed none of its topics and
    services. A camera rule whose other transport's rule matched is not one: the launch file
    remaps both `<camera>/image` and `<camera>/image/compressed` when the model decides."""
    topics = {p.topic_name for p in node.publishers} | {s.topic_name for s in node.subscriptions}
    names = topics | {s.srv_name for s in node.services}
    targets = {}
    for rule in remap_rules(argv, node.get_name()):
        left, _, right = rule.partition(':=')
        try:
            targets[rule] = node.resolve_topic_name(right, only_expand=True)
        except Exception:  # rclpy raises its own invalid-name errors; rcl already refused those
            continue
    matched = {rule.partition(':=')[0] for rule, target in targets.items() if target in names}
    warnings = []
    for rule, target in targets.items():
        left, _, right = rule.partition(':=')
        sibling = left.removesuffix(COMPRESSED) if left.endswith(COMPRESSED) \
            else left + COMPRESSED
        if left in matched or sibling in matched:
            continue
        home = os.path.expanduser('~')
        hint = f' (the shell expanded "~" to {home}: quote the rule, e.g. ' \
            f"-r '~/{left[len(home):].lstrip('/')}:={right}')" \
            if home not in ('~', '/') and left.startswith(home + '/') else ''
        warnings.append(f"remap rule {rule!r} matched nothing: none of the node's topics or "
                        f'services is renamed to {target}{hint}; its topics: '
                        f'{", ".join(sorted(topics))}')
    return warnings
