"""`so101_fleet_sim`: several SO-101 arms, each its own simulator under its own namespace, in
one process on one clock, for one aura_node serving them all (its `robots` parameter).

    python -m aura_ros.ros.so101.fleet_sim --ros-args -p robots:='[arm1, arm2, arm3]' \\
        -p lockstep:=true -p wait_for_command:=true -p trajectory_topics:='[aura/action_chunk]'

Every arm is a `so101_sim` node (sim.py) in the namespace of its name: /arm2/image,
/arm2/joint_states, /arm2/task_events in and, with the trajectory topic relative, the fleet
node's /arm2/aura/action_chunk executed. Every parameter of so101_sim applies to all arms, but
the seed (arm i gets `seed + i`, so the arms meet different goals) and the outcomes file (one per
arm: outcomes.arm2.jsonl for outcomes.jsonl).

Why one process: a node with use_sim_time has one clock, so the arms must share it. In
lock-step the fleet advances every arm's world together once every arm has answered its frame
(or timed out): the arms' frames carry the same stamps, /clock never goes back, and the fleet
node gets each frame of all arms at once (one batched step). An arm that finished its tasks
stops; the others go on.
"""

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter

from aura_ros.ros.robot import robot_state_file
from aura_ros.ros.so101.sim import So101SimNode, spin_until_done


class FleetLockstep:
    """Advances the worlds of all arms still running once none awaits its answer."""

    def __init__(self, sims: list[So101SimNode]):
        self.sims = sims
        for sim in sims:
            sim.lockstep_advance = self.advance_when_all_answered

    def advance_when_all_answered(self) -> None:
        running = [sim for sim in self.sims if not sim.done]
        if running and not any(sim.awaiting for sim in running):
            for sim in running:
                sim.advance()


def build_fleet(context=None) -> list[So101SimNode]:
    """The arms' simulator nodes, started on one clock (frame 0 at the same sim time)."""
    config = Node('so101_fleet_sim', context=context)
    for name, default, text in (
            ('robots', ['arm1', 'arm2', 'arm3'], 'the arms, each its namespace'),
            ('seed', 0, 'arm i gets seed + i'),
            ('outcomes_file', '', 'one file per arm beside it (outcomes.arm2.jsonl)')):
        config.declare_parameter(name, default, ParameterDescriptor(description=text,
                                                                    read_only=True))
    robots = [str(r) for r in config.get_parameter('robots').value]
    seed = int(config.get_parameter('seed').value)
    outcomes = str(config.get_parameter('outcomes_file').value)
    base = config.get_clock().now().nanoseconds * 1e-9
    config.destroy_node()
    if not robots or len(set(robots)) != len(robots) or not all(robots):
        raise ValueError(f'parameter robots must name distinct arms, got {robots!r}')
    sims = [So101SimNode('so101_sim', autostart=False, namespace=robot, context=context,
                         parameter_overrides=[
                             Parameter('seed', value=seed + i),
                             Parameter('outcomes_file', value=robot_state_file(outcomes, robot))])
            for i, robot in enumerate(robots)]
    if not all(sim.params['lockstep'] for sim in sims):
        for sim in sims:
            sim.destroy_node()
        raise ValueError('so101_fleet_sim runs in lock-step only (parameter lockstep:=true): '
                         'one clock for all arms')
    FleetLockstep(sims)
    for sim in sims:
        sim.start(base)
    return sims


def main(args=None) -> int:
    """Spin the arms until every one is done; exit codes as so101_sim's."""
    return spin_until_done(build_fleet, args, name='so101_fleet_sim')


if __name__ == '__main__':
    raise SystemExit(main())
