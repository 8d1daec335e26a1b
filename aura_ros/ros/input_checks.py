"""aura_node's check of its input topics on every /diagnostics tick, from the ROS graph.

Per input topic: several publishers (one memory fed by several cameras), a publisher of the
wrong type (DDS never matches it: 0 frames), or publishers but silence; camera frames that made
no set; a second node of the same name. With input_qos auto each input first re-subscribes
where the publishers' reliability changed (adaptive_qos.py).
"""


class InputChecks:
    """The input problems `node` (an AuraNode) has now, and its most image publishers."""

    def __init__(self, node):
        self.node = node
        self.image_publishers = 0
        self.problems: list[str] = []          # what the last check found, for /diagnostics
        self._unmatched_seen: dict[int, int] = {}  # robot row -> unmatched frames seen

    def clear(self) -> None:
        """The topics are gone (cleanup): nothing to report about them."""
        self.problems = []

    def run(self, active: bool) -> None:
        """Check every input topic (topic problems only while `active`); warn, throttled."""
        node, log, problem_log = self.node, self.node.get_logger(), self.node.problem_log
        for robot in node.robots:
            for sub in robot.subscriptions:
                changed = sub.adapt()
                if changed:
                    log.info(changed)
        self._check_name()
        watches = [watch for robot in node.robots for watch in robot.watches.values()]
        if not watches:
            self.image_publishers = 0
            self.problems = []
            return
        found, most = [], 0
        camera_topics = [t for robot in node.robots for t in robot.camera_topics.values()]
        for watch in watches:
            types = [info.topic_type for info in node.get_publishers_info_by_topic(watch.topic)]
            count = len(types)
            if watch.topic in camera_topics:
                if count > 1 and count > self.image_publishers:
                    log.warning(f'{count} publishers on {watch.topic}: their frames all feed '
                                'one memory; remap each camera to its own node')
                most = max(most, count)
            for kind, text in watch.problems(types) if active else []:
                found.append(f'{kind}: {text}')
                if problem_log.throttle.ready(f'{kind} {watch.topic}'):
                    log.warning(text)
        if most > 1:
            found += [f'{node.count_publishers(t)} publishers on {t}'
                      for t in camera_topics if node.count_publishers(t) > 1]
        self.image_publishers = most
        for robot in node.robots:
            matcher = robot.matcher
            if matcher is not None:
                unmatched = sum(matcher.unmatched.values())
                seen = self._unmatched_seen.get(robot.row, 0)
                for _ in range(min(unmatched - seen, 1000)):
                    problem_log.recent.add('camera_frames_unmatched')
                    robot.problems.add('camera_frames_unmatched')
                self._unmatched_seen[robot.row] = unmatched
        self.problems = found

    def _check_name(self) -> None:
        """Two nodes of one name (two `aura` in one namespace): their services and topics mix."""
        node = self.node
        name, namespace = node.get_name(), node.get_namespace()
        same = sum(1 for n, ns in node.get_node_names_and_namespaces()
                   if n == name and ns == namespace)
        if same > 1:
            node.problem_log.report('duplicate_node_name', lambda: (
                f'{same} nodes are named {node.get_fully_qualified_name()}: their topics, '
                'services and parameters mix (give each its own name or namespace)'))
