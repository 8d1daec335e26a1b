"""The smallest URDF that carries joint limits: what a simulated robot publishes as its
robot_description, so that a bag recorded from it gives a trained model the robot's limits.

Standard library only, so any layer may use it: the simulators (aura_ros.ros) and the synthetic
rig's bags (aura_ros.data) write it; aura_ros.data.urdf reads it, as it reads a real robot's.
"""

from xml.sax.saxutils import escape


def limits_urdf(robot: str, joints, limits: dict, fixed=()) -> str:
    """A URDF naming `joints` in order: revolute with `limits[name]` where given, fixed where in
    `fixed`, continuous otherwise. It carries joint limits only (no links' geometry)."""
    def attr(text) -> str:
        return escape(str(text), {'"': '&quot;'})

    lines = []
    for name in joints:
        kind = 'revolute' if name in limits else 'fixed' if name in fixed else 'continuous'
        limit = ''
        if name in limits:
            lower, upper = (float(v) for v in limits[name])
            limit = f'<limit lower="{lower!r}" upper="{upper!r}" effort="1" velocity="1"/>'
        lines.append(f'<joint name="{attr(name)}" type="{kind}"><parent link="base"/>'
                     f'<child link="{attr(name)}_link"/>{limit}</joint>')
    return f'<?xml version="1.0"?><robot name="{attr(robot)}">{"".join(lines)}</robot>'
