"""Pusher show-then-hide: a second arm world, the 7-joint Pusher arm of Gymnasium in MuJoCo.

Why a second world: the trainer must not only work on the SO-101 (6 joints, one camera, a
colour cue). This one differs in every way a user's robot may: the arm is the 7-joint PR2-style
arm that the `gymnasium` wheel ships (`envs/mujoco/assets/pusher_v5.xml`, MIT licence), loaded
from the installed wheel at run time and changed in memory with MjSpec (its push object and goal
removed, its torque motors turned into position servos, a tool-point site, targets, lamps and
two cameras added); it is seen by a fixed `front` camera and a `wrist` camera riding on the
forearm; and its memory task is spatial, not a colour code:

    rest (arm returns home) -> cue (the GOAL TARGET itself lights up for `cue_frames`)
    -> delay (random, all dark; the arm must stay home) -> GO lamp on -> touch and hold

`n_targets` look-alike discs lie on the table in an arc in front of the arm. A task succeeds
when the tool point (site `tool`) stays within `success_radius` of the goal's touch point for
`hold_frames` frames after GO; it fails on holding over another target ('wrong_target'), on
leaving home before GO ('early') or `reach_timeout` frames after GO ('timeout'). Tasks chain
without a reset, as in the SO-101 world.

Distractors look like the cue but never change the goal: a target lit in the DECOY colour
(magenta; where the cue is warm white), or the DECOY lamp beside the table lit in the cue colour.
After the cue the images show nothing of the goal and the arm waits at one home pose, so a
memoryless policy can only guess at GO (1 / n_targets).

The task events (`EVENTS`) carry the same kinds and fields as the SO-101 world's ('cue',
'distractor', 'go', 'success'/'failure' with a TaskOutcome), so one evaluator scores both.
Deterministic given the seed. No ROS here: aura_ros.ros.pusher serves it.
"""

import importlib.util
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from aura_ros.tasks.pusher_config import DEFAULT, PusherConfig  # noqa: F401 (re-exported)
from aura_ros.tasks.reach_task import (  # noqa: F401 (re-exported)
    ChainedReachTasks,
    Targets,
    TaskOutcome,
    drive,
    shrink,
)
from aura_ros.tasks.so101 import _look_at, _rgba, make_renderer, mujoco

JOINT_NAMES = ('r_shoulder_pan_joint', 'r_shoulder_lift_joint', 'r_upper_arm_roll_joint',
               'r_elbow_flex_joint', 'r_forearm_roll_joint', 'r_wrist_flex_joint',
               'r_wrist_roll_joint')
#: Home: the forearm raised above the table, the fork pointing down and forward.
HOME_Q = np.array([0.0, -0.35, 0.0, -1.6, 0.0, -0.6, 0.0])
CUE_COLOUR = (255, 235, 170)      # warm white: the goal target in the cue
DECOY_COLOUR = (235, 40, 220)     # magenta: a target in a distractor flash
GO_COLOUR = (40, 230, 60)
DARK = (45, 45, 50)
TARGET_COLOUR = (60, 80, 110)
_BASE = np.array([0.0, -0.6, 0.0])     # the shoulder pan axis (pusher_v5.xml)
_TABLE_Z = -0.325




def model_path() -> Path:
    """pusher_v5.xml of the installed gymnasium wheel, found without importing gymnasium."""
    spec = importlib.util.find_spec('gymnasium')
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError('the Pusher world needs the gymnasium package '
                                '(pip install gymnasium): its MuJoCo assets hold the arm')
    path = Path(list(spec.submodule_search_locations)[0]) / 'envs/mujoco/assets/pusher_v5.xml'
    if not path.is_file():
        raise FileNotFoundError(f'{path} is missing: a gymnasium without the Pusher arm')
    return path


def target_positions(config: PusherConfig) -> np.ndarray:
    """[n_targets, 2] target centres (x, y) on the table, target 0 on the arm's left (+y)."""
    half = np.deg2rad(config.target_spread_deg) / 2
    angles = np.linspace(half, -half, config.n_targets)
    return np.stack([_BASE[0] + config.target_radius * np.cos(angles),
                     _BASE[1] + config.target_radius * np.sin(angles)], 1)


_LAMPS = {'go': (0.25, -0.05, _TABLE_Z + 0.12), 'decoy': (0.25, -1.15, _TABLE_Z + 0.12)}
_FRONT_POS, _FRONT_TARGET = (1.25, -0.6, 0.45), (0.35, -0.6, -0.25)


def build_model(config: PusherConfig) -> 'mujoco.MjModel':
    """The wheel's Pusher arm, changed in memory: position servos, a tool site, the scene."""
    spec = mujoco.MjSpec.from_file(str(model_path()))
    for name in ('object', 'goal'):                 # the push task's own bodies
        spec.delete(spec.body(name))
    for actuator in spec.actuators:                 # torque motors -> position servos
        joint = spec.joint(actuator.target)
        actuator.set_to_position(kp=30.0, kv=3.0)
        actuator.ctrlrange = joint.range
        actuator.ctrllimited = 1
        actuator.forcerange = [-20.0, 20.0]
        actuator.forcelimited = 1
    spec.option.timestep = config.period / config.substeps
    spec.visual.global_.offwidth = max(config.front_size, config.wrist_size, 64)
    spec.visual.global_.offheight = max(config.front_size, config.wrist_size, 64)
    spec.visual.quality.offsamples = 0
    spec.visual.quality.shadowsize = 0
    spec.visual.headlight.ambient = [0.45, 0.45, 0.45]
    spec.body('tips_arm').add_site(name='tool', pos=[0.1, 0.0, 0.0], size=[0.01, 0, 0])
    world = spec.worldbody
    spec.geom('table').size = [2.0, 2.0, 0.1]
    spec.geom('table').rgba = _rgba((150, 120, 90))
    glow = spec.add_material(name='glow', emission=0.4, specular=0.0)
    for k, (x, y) in enumerate(target_positions(config)):
        world.add_geom(name=f'target{k}', type=mujoco.mjtGeom.mjGEOM_CYLINDER,
                       pos=[x, y, _TABLE_Z + 0.005], size=[0.07, 0.005, 0],
                       rgba=_rgba(TARGET_COLOUR), material=glow.name)
    for lamp, (x, y, z) in _LAMPS.items():
        world.add_geom(name=f'{lamp}_post', type=mujoco.mjtGeom.mjGEOM_CYLINDER,
                       pos=[x, y, (z + _TABLE_Z) / 2], size=[0.012, (z - _TABLE_Z) / 2, 0],
                       rgba=_rgba((90, 90, 95)))
        world.add_geom(name=f'{lamp}_lamp', type=mujoco.mjtGeom.mjGEOM_SPHERE, pos=[x, y, z],
                       size=[0.06, 0, 0], rgba=_rgba(DARK), material=glow.name)
    world.add_camera(name='front', pos=list(_FRONT_POS),
                     quat=list(_look_at(_FRONT_POS, _FRONT_TARGET)), fovy=60.0)
    # on the forearm at the elbow, looking along it past the fork (the table while reaching)
    spec.body('r_forearm_link').add_camera(
        name='wrist', pos=[0.0, 0.0, 0.1], quat=list(_look_at((0, 0, 0), (1.0, 0.0, -0.4))),
        fovy=75.0)
    return spec.compile()


@dataclass
class PusherWorld(ChainedReachTasks):
    """One long show-then-hide episode: `step(targets)` advances a frame; tasks chain.

    The interface of So101World (step, render, joint_positions, goal, cue_seen, go, outcomes,
    frame, time), so the simulator node and the recorder serve either.
    """

    config: PusherConfig = field(default_factory=PusherConfig)
    seed: int = 0
    joint_names = JOINT_NAMES
    wrong_reason = 'wrong_target'

    def __post_init__(self) -> None:
        c = self.config
        self.model = build_model(c)
        self.data = mujoco.MjData(self.model)
        self.site = self.model.site('tool').id
        self.qpos = np.array([self.model.joint(n).qposadr[0] for n in JOINT_NAMES])
        self.dofs = np.array([self.model.joint(n).dofadr[0] for n in JOINT_NAMES])
        self.target_geoms = [self.model.geom(f'target{k}').id for k in range(c.n_targets)]
        self.lamp_geoms = {lamp: self.model.geom(f'{lamp}_lamp').id for lamp in _LAMPS}
        xy = target_positions(c)
        self.touch_points = np.concatenate(
            [xy, np.full((c.n_targets, 1), _TABLE_Z + c.touch_height)], 1)
        self.reach_points = self.touch_points
        self._renderer = None
        self.reset()

    def reset(self) -> None:
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[self.qpos] = HOME_Q
        self.data.ctrl[:] = HOME_Q
        mujoco.mj_kinematics(self.model, self.data)
        self.home_point = self.tool().copy()
        self.rng = np.random.default_rng(self.seed)
        self.frame = 0
        self.flash: Optional[tuple[str, int, int]] = None    # (kind, target, frames left)
        self.outcomes: list[TaskOutcome] = []
        self._new_task(0)

    def colours(self) -> dict[int, tuple]:
        """RGB of every target and lamp geom now."""
        out = {g: TARGET_COLOUR for g in self.target_geoms}
        out.update({g: DARK for g in self.lamp_geoms.values()})
        if self.flash is not None:
            kind, target, _ = self.flash
            if kind == 'lamp':
                out[self.lamp_geoms['decoy']] = CUE_COLOUR
            else:
                out[self.target_geoms[target]] = DECOY_COLOUR
        if self.cue_on:
            out[self.target_geoms[self.task.goal]] = CUE_COLOUR
        if self.go:
            out[self.lamp_geoms['go']] = GO_COLOUR
        return out

    def joint_positions(self) -> np.ndarray:
        return self.data.qpos[self.qpos].copy()

    def joint_velocities(self) -> np.ndarray:
        return self.data.qvel[self.dofs].copy()

    def tool(self) -> np.ndarray:
        return self.data.site_xpos[self.site]

    def render(self) -> dict[str, np.ndarray]:
        """uint8 [H, W, 3] RGB image of each camera (front, wrist), as of now."""
        c = self.config
        if self._renderer is None:
            size = max(c.front_size, c.wrist_size)
            self._renderer = make_renderer(self.model, size, size)
            self._closer = weakref.finalize(self, self._renderer.close)
        for geom, rgb in self.colours().items():
            self.model.geom_rgba[geom] = _rgba(rgb)
        images = {}
        for camera, size in (('front', c.front_size), ('wrist', c.wrist_size)):
            self._renderer.update_scene(self.data, camera=camera)
            pixels = self._renderer.render()
            images[camera] = shrink(pixels, size)
        return images

    def _actuate(self, q: np.ndarray) -> None:
        self.data.ctrl[:] = np.clip(q, self.model.actuator_ctrlrange[:, 0],
                                    self.model.actuator_ctrlrange[:, 1])
        mujoco.mj_step(self.model, self.data)

    def _forward(self) -> None:
        mujoco.mj_kinematics(self.model, self.data)

    def _cue_fields(self) -> dict:
        return {}

    def _flash_events(self) -> list[dict]:
        """Distractor flashes, never overlapping the cue. Three draws per frame, always."""
        c, task = self.config, self.task
        draw, kind_draw, target_draw = self.rng.random(3)
        if self.flash is not None:
            kind, target, left = self.flash
            self.flash = (kind, target, left - 1) if left > 1 else None
            return []
        clear = task.step + c.distractor_frames <= c.rest_frames or \
            task.step >= c.rest_frames + c.cue_frames
        if not clear or draw >= c.distractor_prob:
            return []
        kind = 'lamp' if kind_draw < c.decoy_lamp_share else 'target'
        target = int(target_draw * c.n_targets)
        self.flash = (kind, target, c.distractor_frames)
        task.distractors += 1
        return [self._event('distractor', kind=kind, target=target)]


#: Event kinds PusherWorld.step returns, each with 'event', 'task', 'frame', 'time'.
EVENTS = {
    'cue': 'the goal target lights in the cue colour: goal (target index)',
    'distractor': "a flash to ignore: kind ('lamp': the decoy lamp in the cue colour, 'target': "
                  'a target in the decoy colour), target',
    'go': 'the GO lamp lights: goal',
    'success': 'the task ended well: TaskOutcome fields',
    'failure': "the task failed: TaskOutcome fields; reason 'wrong_target', 'early', 'timeout'",
}


# -- the expert -----------------------------------------------------------------------------


@dataclass
class PusherExpert:
    """Joint-space expert with privileged knowledge of the goal: before GO it moves (rate
    limited) to home and holds it; after GO to the goal's touch pose, solved once per target by
    damped least squares on the tool point (the roll joints held at home)."""

    model: 'mujoco.MjModel'
    touch_points: np.ndarray
    max_step: float = 0.12          # rad per frame, per joint

    def __post_init__(self) -> None:
        self.poses = np.stack([self._solve(p) for p in self.touch_points])
        self.targets = HOME_Q.copy()

    def reset(self, targets: Optional[np.ndarray] = None) -> None:
        self.targets = (HOME_Q if targets is None else np.asarray(targets, float)).copy()

    def act(self, q: np.ndarray, goal: Optional[int], go: bool) -> np.ndarray:
        """Joint targets for the next frame (the measured joints q are not needed: the servos
        track the targets)."""
        aim = self.poses[goal] if go and goal is not None else HOME_Q
        self.targets += np.clip(aim - self.targets, -self.max_step, self.max_step)
        return self.targets.copy()

    def _solve(self, point: np.ndarray, iters: int = 300) -> np.ndarray:
        data = mujoco.MjData(self.model)
        site = self.model.site('tool').id
        qadr = np.array([self.model.joint(n).qposadr[0] for n in JOINT_NAMES])
        dofs = np.array([self.model.joint(n).dofadr[0] for n in JOINT_NAMES])
        moving = [0, 1, 3, 5]                            # pan, lift, elbow, wrist flex
        q = HOME_Q.copy()
        low, high = self.model.jnt_range[[self.model.joint(n).id for n in JOINT_NAMES]].T
        for _ in range(iters):
            data.qpos[qadr] = q
            mujoco.mj_kinematics(self.model, data)
            mujoco.mj_comPos(self.model, data)
            jac = np.zeros((3, self.model.nv))
            mujoco.mj_jacSite(self.model, data, jac, None, site)
            J = jac[:, dofs[moving]]
            error = point - data.site_xpos[site]
            q[moving] += J.T @ np.linalg.solve(J @ J.T + 0.01 * np.eye(3), 0.5 * error)
            q = np.clip(q, low + 1e-3, high - 1e-3)
        return q


def run_expert(world: PusherWorld, tasks: int, max_frames: int = 100_000,
               expert: Optional[PusherExpert] = None) -> list[TaskOutcome]:
    """Drive `world` with the expert (in process) until `tasks` more tasks ended."""
    expert = expert or PusherExpert(world.model, world.touch_points)
    return drive(world, expert, tasks, max_frames)
