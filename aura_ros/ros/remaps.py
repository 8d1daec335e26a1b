"""Remap rules that match nothing at all: said at start instead of publishing somewhere unexpected.

`-r ~/arm:=/arm_controller/joint_trajectory`, unquoted in bash, reaches the node as
`/home/user/arm:=...` (the shell expands `~`); the rule then matches nothing, the node publishes
on `/aura/arm`, and ROS says nothing. aura_ros/ros/model_remaps.py judges the rules for the
model's own names (`~/<group>`, the cameras); this judges every other rule by its outcome, since
rcl does not tell which rules matched: a rule whose right side names none of the node's topics
or services (after start-up, when every topic exists) matched nothing.
"""

import os
from typing import Sequence

from aura_ros.ros.model_remaps import is_model_name


def unmatched_remaps(node, rules: Sequence[tuple[str, str]]) -> list[str]:
    """A warning for each (from, to) rule for this node (model_remaps.remap_rules) that renamed
    none of its topics and services, other than the model's own names (model_remaps)."""
    topics = {p.topic_name for p in node.publishers} | {s.topic_name for s in node.subscriptions}
    names = topics | {s.srv_name for s in node.services}
    warnings = []
    for source, target in rules:
        if is_model_name(source):
            continue
        try:
            resolved = node.resolve_topic_name(target, only_expand=True)
        except Exception:  # rclpy raises its own invalid-name errors; rcl already refused those
            continue
        if resolved in names:
            continue
        home = os.path.expanduser('~')
        hint = f' (the shell expanded "~" to {home}: quote the rule, e.g. ' \
            f"-r '~/{source[len(home):].lstrip('/')}:={target}')" \
            if home not in ('~', '/') and source.startswith(home + '/') else ''
        warnings.append(f"remap {source}:={target} matched nothing: none of the node's topics or "
                        f'services is renamed to {resolved}{hint}; its topics: '
                        f'{", ".join(sorted(topics))}')
    return warnings
