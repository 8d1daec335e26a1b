"""The cue-reach task: deterministic, the cue shows only on its frames, and it needs memory."""

import numpy as np
import pytest

from aura_ros.tasks.cue_reach import (
    CUE_COLOURS,
    LAMP_CUE,
    LAMP_DARK,
    LAMP_DISTRACTOR,
    N_PADS,
    CueReach,
    CueReachConfig,
    forward_kinematics,
    inverse_kinematics,
    lamp_render_args,
    run_expert,
)


def trace(env, frames):
    """Images, joints and lamp states of `frames` expert frames."""
    out = []
    for _ in range(frames):
        out.append((env.image(), env.joints(), env.lamp, env.lamp_class, env.goal, env.go))
        env.step(env.expert_chunk()[0])
    return out


def test_same_seed_same_episode_other_seed_another():
    a, b, c = (trace(CueReach(seed=s), 300) for s in (3, 3, 4))
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) and x[2:] == y[2:]
    assert any(not np.array_equal(x[0], y[0]) for x, y in zip(a, c, strict=True))


@pytest.mark.parametrize('size', [(64, 64), (48, 80)])
def test_images_have_the_configured_size(size):
    height, width = size
    env = CueReach(CueReachConfig(width=width, height=height), seed=0)
    image = env.image()
    assert image.shape == (height, width, 3) and image.dtype == np.uint8


def lamp_pixels(env, image):
    return image[env.renderer.lamp_disk]


def test_cue_is_visible_only_on_its_frames_and_names_the_goal():
    config = CueReachConfig(distractor_prob=0.0)
    env = CueReach(config, seed=1)
    for _ in range(3):   # three tasks
        task = env.task.index
        frames = []
        while env.task.index == task:
            frames.append((env.task.step, env.image(), env.goal))
            env.step(env.expert_chunk()[0])
        for step, image, goal in frames:
            pixels = lamp_pixels(env, image)
            lit = (pixels == CUE_COLOURS[goal]).all(-1).mean()
            if step < config.cue_frames:
                assert lit == 1.0            # the whole disk shows the goal's colour
            else:
                for colour in CUE_COLOURS:   # dark: no cue colour anywhere in the lamp
                    assert not (pixels == colour).all(-1).any()


def test_after_the_cue_the_image_does_not_depend_on_the_goal():
    """Same arm pose and lamp state, different goals: identical images (memory is needed)."""
    a, b = CueReach(seed=5), CueReach(seed=5)
    b.task.goal = (a.task.goal + 3) % N_PADS
    assert not np.array_equal(a.image(), b.image())   # the cue differs ...
    for env in (a, b):
        env.task.step = env.config.cue_frames + 1
        env._distractor_left = 0
    assert np.array_equal(a.image(), b.image())       # ... and nothing else does


def test_distractors_are_rings_with_a_dark_centre():
    env = CueReach(CueReachConfig(distractor_prob=1.0), seed=2)
    while env.lamp != LAMP_DISTRACTOR:
        env.step(np.zeros(2))
    image = env.image()
    centre = env.renderer._disk(env.renderer.lamp_xy, env.renderer.ring_inner * 0.9)
    colour = CUE_COLOURS[lamp_render_args(env.lamp_class)[1]]
    assert (image[env.renderer.lamp_ring] == colour).all()
    assert not (image[centre] == colour).all(-1).any()
    assert env.lamp_class > N_PADS


def test_lamp_classes_round_trip():
    assert lamp_render_args(0) == (LAMP_DARK, 0)
    assert lamp_render_args(3) == (LAMP_CUE, 2)
    assert lamp_render_args(1 + N_PADS + 5) == (LAMP_DISTRACTOR, 5)


def test_kinematics_round_trip():
    config = CueReachConfig()
    env = CueReach(config, seed=0)
    for pad, q in zip(env.pads, env.pad_q, strict=True):
        assert np.allclose(forward_kinematics(q, config)[1], pad, atol=1e-9)
        assert np.allclose(inverse_kinematics(pad, config), q)


def test_arm_holds_until_go_and_the_speed_limit_holds():
    env = CueReach(seed=7)
    q0 = env.joints().copy()
    while not env.go:
        assert not env.expert_chunk().any()
        env.step(env.expert_chunk()[0])
    assert np.array_equal(env.joints(), q0)
    env.step(np.array([1.0, -1.0]))
    assert np.allclose(env.joints() - q0, [env.config.max_step, -env.config.max_step])


def test_expert_with_the_true_goal_succeeds():
    results = run_expert(CueReach(seed=11), tasks=40)
    assert len(results) == 40
    assert np.mean([r.success for r in results]) >= 0.95
    assert all(r.distractors >= 0 for r in results)


def test_expert_that_forgets_the_cue_is_near_chance():
    results = []
    for seed in range(4):
        results += run_expert(CueReach(seed=seed), tasks=40, memory=False,
                              rng=np.random.default_rng(seed))
    rate = np.mean([r.success for r in results])
    assert rate < 0.3, rate          # chance is 1/7 ~ 0.14 (the goal is never the current pad)


def test_tasks_chain_in_one_episode_and_new_cues_start_them():
    env = CueReach(seed=9)
    seen = []
    for _ in range(2000):
        if env.task.step == 0:
            seen.append((env.task.index, env.lamp))
        env.step(env.expert_chunk()[0])
    assert [i for i, _ in seen] == list(range(len(seen))) and len(seen) > 5
    assert all(lamp == LAMP_CUE for _, lamp in seen)


def test_streams_chain_episodes_and_train_carried_keeps_the_state():
    """The long-episode phase: windows follow on within an episode, then into another one."""
    from dataclasses import replace

    import torch

    from aura_ros.memory import AuraMemLayer, LearnedGate
    from aura_ros.training.cue_reach import QUICK, Streams, memory_config, train_carried

    E, T, d = 3, 50, 128
    z = torch.arange(E * T, dtype=torch.float32).reshape(E, T, 1).expand(E, T, d).clone()
    target = torch.zeros(E, T, 4, 2)
    onset = np.zeros((E, T), bool)
    onset[:, [0, 20]] = True
    streams = Streams(z, target, onset, batch=2, window=30, seed=0)
    first, _ = streams.next()
    second, _ = streams.next()
    for row in range(2):
        frames = torch.cat([first[row, :, 0], second[row, :, 0]]).long()
        assert (frames[0] % T) in (0, 20)                  # starts at a task onset
        steps = frames[1:] - frames[:-1]
        assert ((steps == 1) | (frames[1:] % T == 0)).all()  # contiguous or a new episode
    cfg = replace(QUICK, batch=2, window=30, carry_burnin=60)
    task = CueReachConfig()
    layer = AuraMemLayer(memory_config(cfg, task), LearnedGate(0.0))
    hist = train_carried(layer, streams, cfg, 2, 'test', task.max_step, gated=True)
    assert len(hist) == 2 and all(np.isfinite(h['action']) for h in hist)
    assert isinstance(layer.gate_policy, LearnedGate) and layer.gate_policy.threshold == 0.0
