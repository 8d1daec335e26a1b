"""The Pusher show-then-hide world (ROS-free): the wheel's 7-joint arm, two cameras, a cue that
only the images show for a few frames, and an expert that solves the task from state."""

import numpy as np
import pytest

pytest.importorskip('gymnasium')
pusher = pytest.importorskip('aura_ros.tasks.pusher')

SHORT = dict(delay_min=6, delay_max=12)


def _world(seed=0, **knobs):
    return pusher.PusherWorld(pusher.DEFAULT.with_knobs(**knobs), seed=seed)


def test_the_arm_is_the_wheels_pusher_with_position_servos_and_two_cameras():
    world = _world()
    model = world.model
    assert pusher.model_path().name == 'pusher_v5.xml' and 'gymnasium' in str(pusher.model_path())
    names = [model.joint(i).name for i in range(model.njnt)]
    assert tuple(names) == pusher.JOINT_NAMES == world.joint_names     # push object removed
    assert model.nu == 7 and (model.actuator_biastype != 0).all()       # position servos
    images = world.render()
    assert images['front'].shape == (96, 96, 3) and images['wrist'].shape == (64, 64, 3)
    assert images['front'].dtype == np.uint8 and images['front'].std() > 10


def test_the_expert_solves_every_task_from_state():
    world = _world(seed=3, **SHORT)
    outcomes = pusher.run_expert(world, tasks=16)
    assert [o.reason for o in outcomes] == ['reached'] * 16
    assert {o.goal for o in outcomes} == {0, 1, 2}
    assert all(o.go_frame > o.cue_frame for o in outcomes)


def test_the_wrong_goal_fails_and_leaving_home_early_fails():
    world = _world(seed=1, **SHORT)
    expert = pusher.PusherExpert(world.model, world.touch_points)
    wrong = (world.goal + 1) % world.config.n_targets     # a memoryless guess gone wrong
    while not world.outcomes:
        world.step(expert.act(None, wrong if world.cue_seen else None, world.go))
    assert world.outcomes[0].reason == 'wrong_target' and world.outcomes[0].reached == wrong
    world = _world(seed=1, **SHORT)
    while not world.outcomes:                              # reaching before GO
        world.step(expert.act(None, world.goal, world.cue_seen))
    assert world.outcomes[0].reason == 'early'


def test_the_goal_shows_only_during_the_cue_and_distractors_never_change_it():
    world = _world(seed=2, distractor_prob=0.2, **SHORT)
    expert = pusher.PusherExpert(world.model, world.touch_points)
    c = world.config
    cue_images, other_images, events = [], [], []
    while len(world.outcomes) < 3:
        goal = world.goal
        new = world.step(expert.act(None, goal if world.cue_seen else None, world.go))
        events += new
        colours = world.colours()
        goal_geom = world.target_geoms[goal]
        if world.cue_on:
            assert colours[goal_geom] == pusher.CUE_COLOUR
            if len(cue_images) < 3:
                cue_images.append(world.render()['front'].astype(float))
        else:   # outside the cue no target shows the cue colour
            assert all(colours[g] != pusher.CUE_COLOUR for g in world.target_geoms)
            if world.flash is None and len(other_images) < 3 and world.task.step > c.rest_frames:
                other_images.append(world.render()['front'].astype(float))
    kinds = [e['event'] for e in events]
    assert kinds.count('cue') >= 3 and kinds.count('distractor') >= 3
    assert [o.reason for o in world.outcomes] == ['reached'] * 3    # flashes change nothing
    cue_tasks = {e['task']: e['goal'] for e in events if e['event'] == 'cue'}
    assert all(cue_tasks[o.task] == o.goal for o in world.outcomes)
    # the cue changes the front picture (a lit target), the dark delay does not show the goal
    assert np.abs(cue_images[0] - other_images[0]).max() > 60
    assert {e['kind'] for e in events if e['event'] == 'distractor'} == {'lamp', 'target'}
