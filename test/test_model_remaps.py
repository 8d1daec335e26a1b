"""Remap rules that fit no output group or camera of the model (issue 23 row 14)."""

from aura_ros.ros.model_remaps import remap_rules, unfit_rules

ARGS = ['aura_node', '--ros-args', '-r', '~/arm:=/arm_ctrl/traj', '--remap', 'other:~/x:=/y',
        '-r', 'aura:front/image/compressed:=/f/compressed', '-r', '__ns:=/robot', '--',
        '-r', 'not:=a_rule']


def test_the_rules_of_this_node_are_read_from_the_ros_arguments():
    assert remap_rules(ARGS, 'aura') == [('~/arm', '/arm_ctrl/traj'),
                                         ('front/image/compressed', '/f/compressed')]


def test_groups_and_cameras_the_model_lacks_are_named_with_what_it_has():
    rules = remap_rules(ARGS, 'aura')
    assert unfit_rules(rules, ['front', 'wrist'], ['arm', 'gripper'], False) == []
    found = unfit_rules(rules, ['image'], ['action_chunk'], False)
    assert len(found) == 2
    assert 'output group(s) are action_chunk' in found[0]
    assert 'camera(s) image on image' in found[1]
    assert 'no camera (features in)' in unfit_rules(rules, [], ['action_chunk'], True)[1]
    assert unfit_rules([('~/gate', '/g'), ('joint_states', '/js')], ['image'], ['arm'],
                       False) == []
