"""Joint limits from a URDF: what the robot's description says, never what the data happened to
visit (a limit guessed from demonstrations would clip every target the demonstrator did not
reach).

Read from `--urdf FILE` or from the `robot_description` (std_msgs/String) a bag recorded
(aura_ros.urdf writes the one the simulators publish).
Revolute and prismatic joints with a `<limit lower upper>` count; continuous joints have no
position limit and are left out, as are fixed ones.
"""

import xml.etree.ElementTree as ET
from pathlib import Path

from .demonstrations import DataError

LIMITED_TYPES = ('revolute', 'prismatic')


def urdf_joint_limits(text: str, where: str = 'URDF') -> dict[str, tuple[float, float]]:
    """{joint: (lower, upper)} of every limited joint; DataError when it is not a URDF."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as err:
        raise DataError(f'{where}: not valid URDF XML ({err})') from err
    if root.tag != 'robot':
        raise DataError(f'{where}: not a URDF (root element <{root.tag}>, expected <robot>)')
    limits = {}
    for joint in root.iter('joint'):
        limit = joint.find('limit')
        if joint.get('type') not in LIMITED_TYPES or limit is None:
            continue
        try:
            lower, upper = float(limit.get('lower', 0.0)), float(limit.get('upper', 0.0))
        except ValueError as err:
            raise DataError(f'{where}: joint {joint.get("name")!r} has a bad <limit> '
                            f'({err})') from err
        if lower < upper:
            limits[joint.get('name')] = (lower, upper)
    return limits


def read_urdf_limits(path) -> dict[str, tuple[float, float]]:
    """The joint limits of a URDF file (DataError naming the file when it cannot)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f'{path}: no such URDF file')
    return urdf_joint_limits(path.read_text(), str(path))
