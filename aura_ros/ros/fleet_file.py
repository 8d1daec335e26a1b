"""The fleet file: which robots one aura_node serves and where each robot's topics are.

    robots:
      arm1:
        image: /arm1/camera/image_raw          # a one-camera model (or cameras: {front: /...})
        joint_states: /arm1/joint_states
        outputs: {action_chunk: /arm1/arm_controller/joint_trajectory}
      arm2: {}                                  # empty: /arm2/image, /arm2/joint_states, ...

Inside the node each robot has the single-robot names under its own (`arm1/image`,
`arm1/joint_states`, `arm1/<node>/<group>`); `fleet_remappings` turns the file into the remap
rules of the launch file (launch/fleet.launch.py). Checked when read: a problem names the robot
and the key.
"""

from pathlib import Path

import yaml

TOPIC_KEYS = ('image', 'joint_states', 'features')
KEYS = (*TOPIC_KEYS, 'cameras', 'outputs')


class FleetFileError(ValueError):
    """A fleet file that cannot be used; the message names the robot and the key."""


def load_fleet(path: str | Path) -> dict[str, dict]:
    """{robot: {key: topic or {name: topic}}} from a fleet file, in the file's order."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise FleetFileError(f'{path}: {err}') from err
    robots = data.get('robots') if isinstance(data, dict) else None
    if not isinstance(robots, dict) or not robots:
        raise FleetFileError(f'{path}: expected a mapping "robots: {{name: {{topics}}}}"')
    fleet = {}
    for name, topics in robots.items():
        topics = topics or {}
        if not isinstance(topics, dict):
            raise FleetFileError(f'{path}: robots.{name} must be a mapping of topics')
        unknown = sorted(set(topics) - set(KEYS))
        if unknown:
            raise FleetFileError(f'{path}: robots.{name}: unknown key(s) {unknown}; allowed: '
                                 f'{", ".join(KEYS)}')
        for key in ('cameras', 'outputs'):
            if not isinstance(topics.get(key, {}), dict):
                raise FleetFileError(f'{path}: robots.{name}.{key} must map names to topics')
        fleet[str(name)] = topics
    return fleet


def fleet_remappings(fleet: dict[str, dict], node_name: str = 'aura',
                     transport: str = '') -> list[tuple[str, str]]:
    """The remap rules of every robot's topics. Camera rules cover both transports unless
    `transport` is raw or compressed (as launch/aura.launch.py does for one robot)."""
    suffixes = {'raw': ('',), 'compressed': ('/compressed',)}.get(transport, ('', '/compressed'))
    rules = []
    for robot, topics in fleet.items():
        cameras = [('image', topics['image'])] if 'image' in topics else []
        cameras += [(f'{camera}/image', topic)
                    for camera, topic in topics.get('cameras', {}).items()]
        rules += [(f'{robot}/{name}{suffix}', f'{topic}{suffix}')
                  for name, topic in cameras for suffix in suffixes]
        rules += [(f'{robot}/{key}', topics[key]) for key in ('joint_states', 'features')
                  if key in topics]
        rules += [(f'{robot}/{node_name}/{group}', topic)
                  for group, topic in topics.get('outputs', {}).items()]
    return rules
