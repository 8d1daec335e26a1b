"""Cue-reach: a closed-loop visuomotor memory task, seen from above as an RGB image.

A planar two-link arm (base at the image centre) must touch one of 8 look-alike pads (same colour
and shape, on two rings). At the start of each task a cue lamp in the top-left corner lights for
`cue_frames` frames as a FILLED disk whose colour names the goal pad (`CUE_COLOURS[k]` -> pad k),
then goes dark. The arm must hold still until the GO light (top-right square) turns on after a
random delay, then reach the goal and stay within `success_radius` of it for `hold_frames` frames.
Distractor flashes show a RING (annulus) of one of the same 8 colours in the same lamp: they look
like cues but never change the goal; the hollow centre is the visual difference a gate can learn.

Why the task needs memory: once the cue is dark nothing in the image says which pad is the goal,
and the arm holds still at the previous pad until GO, so the position gives nothing away either.
Once the arm moves, its position partially reveals the goal (the CNN sees the arm); that only
helps a policy that already started the right way. One episode is a long chain of tasks: a new
cue starts a new task right after a success or a timeout, without any reset.

Joint state: (shoulder, elbow) angles in radians. Action: a chunk of joint position deltas
(radians per action period, 1/30 s), executed one point per frame and clipped to `max_step`.
Everything is seeded and deterministic; rendering is vectorised numpy over the pixel grid.
"""

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

JOINT_NAMES = ('shoulder', 'elbow')
ACTION_NAMES = ('shoulder', 'elbow')
N_PADS = 8
#: Cue colour k names pad k (RGB). Distractor rings use the same colours.
CUE_COLOURS = np.array([
    (230, 40, 40),    # 0 red
    (40, 200, 40),    # 1 green
    (50, 90, 250),    # 2 blue
    (235, 225, 40),   # 3 yellow
    (40, 215, 225),   # 4 cyan
    (225, 50, 225),   # 5 magenta
    (250, 140, 20),   # 6 orange
    (245, 245, 245),  # 7 white
], dtype=np.uint8)
COLOUR_NAMES = ('red', 'green', 'blue', 'yellow', 'cyan', 'magenta', 'orange', 'white')

LAMP_DARK, LAMP_CUE, LAMP_DISTRACTOR = 'dark', 'cue', 'distractor'
#: Number of lamp classes of `CueReach.lamp_class`: dark, 8 cues, 8 distractors.
N_LAMP_CLASSES = 1 + 2 * N_PADS

_BACKGROUND = (28, 28, 32)
_PAD = (80, 110, 150)
_HOUSING = (58, 58, 62)
_GO_ON = (60, 235, 120)
_LINK = (170, 170, 170)
_JOINT = (250, 250, 250)


@dataclass(frozen=True)
class CueReachConfig:
    """Geometry, timing and rendering of cue-reach (world units: the image spans [-1, 1])."""

    width: int = 64
    height: int = 64
    cue_frames: int = 4              # frames the cue lamp is lit at the start of a task
    delay_min: int = 20              # frames from cue end to GO, drawn uniformly in [min, max]
    delay_max: int = 100
    reach_timeout: int = 120         # frames after GO before the task counts as failed
    hold_frames: int = 6             # consecutive frames within success_radius: passing by fails
    success_radius: float = 0.08
    distractor_prob: float = 0.03    # chance per frame (outside the cue) that a flash starts
    distractor_frames: int = 3
    max_step: float = 0.06           # joint speed limit, rad per action period
    chunk: int = 4
    action_period_s: float = 1.0 / 30.0
    link1: float = 0.45
    link2: float = 0.40
    pad_radii: tuple = (0.55, 0.75)  # pads alternate between these ring radii
    pad_size: float = 0.07

    def __post_init__(self) -> None:
        for name in ('width', 'height', 'cue_frames', 'delay_min', 'delay_max', 'reach_timeout',
                     'hold_frames', 'distractor_frames', 'chunk'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f'CueReachConfig.{name} must be a positive integer, got {value!r}')
        if self.delay_max < self.delay_min:
            raise ValueError('CueReachConfig.delay_max must be >= delay_min')
        if not 0.0 <= self.distractor_prob <= 1.0:
            raise ValueError('CueReachConfig.distractor_prob must be in [0, 1]')
        reach = (abs(self.link1 - self.link2), self.link1 + self.link2)
        if not all(reach[0] < r < reach[1] for r in self.pad_radii):
            raise ValueError(f'pad radii {self.pad_radii} outside the arm reach {reach}')


@dataclass
class TaskResult:
    """One finished task of the long episode."""

    index: int
    goal: int
    success: bool
    steps: int             # frames from the cue onset to the end of the task
    go_step: int           # frame (within the task) at which GO turned on
    distractors: int       # distractor flashes during the task
    writes: Optional[int] = None   # filled in by whoever ran a memory

    def to_dict(self) -> dict:
        return dict(vars(self))


def lamp_render_args(lamp_class: int) -> tuple[str, int]:
    """(lamp state, colour index) of a lamp class (see `CueReach.lamp_class`)."""
    if lamp_class == 0:
        return LAMP_DARK, 0
    if lamp_class <= N_PADS:
        return LAMP_CUE, lamp_class - 1
    return LAMP_DISTRACTOR, lamp_class - 1 - N_PADS


def pad_positions(config: CueReachConfig) -> np.ndarray:
    """[8, 2] pad centres: angles pi/8 + k pi/4, radii alternating over `pad_radii`."""
    angles = np.pi / 8 + np.arange(N_PADS) * np.pi / 4
    radii = np.array([config.pad_radii[k % len(config.pad_radii)] for k in range(N_PADS)])
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1)


def forward_kinematics(q: np.ndarray, config: CueReachConfig) -> tuple[np.ndarray, np.ndarray]:
    """(elbow xy, end effector xy) of joint angles q = (shoulder, elbow)."""
    elbow = config.link1 * np.array([np.cos(q[0]), np.sin(q[0])])
    tip = elbow + config.link2 * np.array([np.cos(q[0] + q[1]), np.sin(q[0] + q[1])])
    return elbow, tip


def inverse_kinematics(xy: np.ndarray, config: CueReachConfig) -> np.ndarray:
    """Joint angles (elbow-positive branch, shoulder in (-pi, pi]) that put the tip at xy."""
    l1, l2 = config.link1, config.link2
    r2 = float(xy[0] ** 2 + xy[1] ** 2)
    c2 = np.clip((r2 - l1 ** 2 - l2 ** 2) / (2 * l1 * l2), -1.0, 1.0)
    q2 = float(np.arccos(c2))
    q1 = np.arctan2(xy[1], xy[0]) - np.arctan2(l2 * np.sin(q2), l1 + l2 * np.cos(q2))
    q1 = float((q1 + np.pi) % (2 * np.pi) - np.pi)
    return np.array([q1, q2])


def plan_chunk(q: np.ndarray, target: np.ndarray, config: CueReachConfig) -> np.ndarray:
    """[chunk, 2] rate-limited joint deltas that drive q towards target (the expert's plan)."""
    out = np.zeros((config.chunk, 2), np.float32)
    q = np.array(q, dtype=np.float64)
    for i in range(config.chunk):
        d = np.clip(target - q, -config.max_step, config.max_step)
        out[i] = d
        q = q + d
    return out


class Renderer:
    """Vectorised top-down renderer: static layer once, then arm, lamp and GO light per frame."""

    def __init__(self, config: CueReachConfig):
        self.config = c = config
        xs = (np.arange(c.width) + 0.5) / c.width * 2 - 1
        ys = 1 - (np.arange(c.height) + 0.5) / c.height * 2          # y points up
        self.X, self.Y = np.meshgrid(xs, ys)                         # [H, W] world coordinates
        self.lamp_xy = np.array([-0.8, 0.8])
        self.go_xy = np.array([0.8, 0.8])
        # The lamp and GO light are at least 2 pixels across at any image size.
        px = 2.0 / min(c.width, c.height)
        self.lamp_r = max(0.14, 3.0 * px)
        self.ring_inner = 0.55 * self.lamp_r
        self.go_half = max(0.08, 1.5 * px)
        self.link_half = max(0.035, 0.6 * px)
        self.joint_r = max(0.05, 0.8 * px)
        static = np.empty((c.height, c.width, 3), np.uint8)
        static[:] = _BACKGROUND
        for xy in pad_positions(c):
            static[self._disk(xy, max(c.pad_size, px))] = _PAD
        static[self._disk(self.lamp_xy, self.lamp_r * 1.12)] = _HOUSING
        static[self._square(self.go_xy, self.go_half)] = _HOUSING
        static[self._disk(np.zeros(2), 0.07)] = _LINK                # the base
        self.static = static
        self.lamp_disk = self._disk(self.lamp_xy, self.lamp_r)
        self.lamp_ring = self.lamp_disk & ~self._disk(self.lamp_xy, self.ring_inner)
        self.go_mask = self._square(self.go_xy, self.go_half * 0.8)

    def _disk(self, xy, r) -> np.ndarray:
        return (self.X - xy[0]) ** 2 + (self.Y - xy[1]) ** 2 <= r * r

    def _square(self, xy, half) -> np.ndarray:
        return (np.abs(self.X - xy[0]) <= half) & (np.abs(self.Y - xy[1]) <= half)

    def _segment(self, a, b, half) -> np.ndarray:
        ab = b - a
        t = ((self.X - a[0]) * ab[0] + (self.Y - a[1]) * ab[1]) / max(float(ab @ ab), 1e-12)
        t = np.clip(t, 0.0, 1.0)
        dx, dy = self.X - a[0] - t * ab[0], self.Y - a[1] - t * ab[1]
        return dx * dx + dy * dy <= half * half

    def render(self, q: np.ndarray, lamp: str, colour: int, go: bool) -> np.ndarray:
        """uint8 [H, W, 3] RGB image of the scene."""
        img = self.static.copy()
        if lamp == LAMP_CUE:
            img[self.lamp_disk] = CUE_COLOURS[colour]
        elif lamp == LAMP_DISTRACTOR:
            img[self.lamp_ring] = CUE_COLOURS[colour]
        if go:
            img[self.go_mask] = _GO_ON
        elbow, tip = forward_kinematics(q, self.config)
        base = np.zeros(2)
        img[self._segment(base, elbow, self.link_half)
            | self._segment(elbow, tip, self.link_half)] = _LINK
        img[self._disk(elbow, self.joint_r * 0.8) | self._disk(tip, self.joint_r)] = _JOINT
        return img


@dataclass
class _Task:
    index: int
    goal: int
    go_step: int
    step: int = 0
    hold: int = 0
    distractors: int = 0


@dataclass
class CueReach:
    """One long cue-reach episode: `observe()`, then `step(delta)`, repeated; tasks chain.

    `step` returns the `TaskResult` of a task that just ended (success or timeout), else None;
    the next task (a new cue) starts on the following frame.
    """

    config: CueReachConfig = field(default_factory=CueReachConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        self.renderer = Renderer(self.config)
        self.pads = pad_positions(self.config)
        self.pad_q = np.stack([inverse_kinematics(p, self.config) for p in self.pads])
        self.reset()

    # -- episode ------------------------------------------------------------------------------

    def reset(self) -> None:
        """Start the episode: the arm rests on a random pad and the first task begins."""
        self.rng = np.random.default_rng(self.seed)
        self.q = self.pad_q[self.rng.integers(N_PADS)].copy()
        self.frame = 0
        self.results: list[TaskResult] = []
        self._distractor_left = 0
        self._distractor_colour = 0
        self._new_task(0)

    def _new_task(self, index: int) -> None:
        c = self.config
        here = self.nearest_pad()
        goal = int(self.rng.choice([k for k in range(N_PADS) if k != here]))
        go_step = c.cue_frames + int(self.rng.integers(c.delay_min, c.delay_max + 1))
        self.task = _Task(index=index, goal=goal, go_step=go_step)
        self._distractor_left = 0

    def nearest_pad(self) -> int:
        _, tip = forward_kinematics(self.q, self.config)
        return int(np.argmin(np.linalg.norm(self.pads - tip, axis=1)))

    # -- what the camera and the encoders see ---------------------------------------------------

    @property
    def goal(self) -> int:
        return self.task.goal

    @property
    def go(self) -> bool:
        return self.task.step >= self.task.go_step

    @property
    def lamp(self) -> str:
        if self.task.step < self.config.cue_frames:
            return LAMP_CUE
        return LAMP_DISTRACTOR if self._distractor_left > 0 else LAMP_DARK

    @property
    def lamp_class(self) -> int:
        """0 dark, 1 + k cue of pad k, 9 + k distractor ring of colour k."""
        lamp = self.lamp
        if lamp == LAMP_CUE:
            return 1 + self.task.goal
        if lamp == LAMP_DISTRACTOR:
            return 1 + N_PADS + self._distractor_colour
        return 0

    def image(self) -> np.ndarray:
        colour = self.task.goal if self.lamp == LAMP_CUE else self._distractor_colour
        return self.renderer.render(self.q, self.lamp, colour, self.go)

    def joints(self) -> np.ndarray:
        return self.q.astype(np.float32)

    def tip(self) -> np.ndarray:
        return forward_kinematics(self.q, self.config)[1]

    # -- expert -----------------------------------------------------------------------------------

    def expert_chunk(self, goal: Optional[int] = None) -> np.ndarray:
        """[chunk, 2] expert deltas: hold still before GO, then rate-limited IK to the goal."""
        if not self.go:
            return np.zeros((self.config.chunk, 2), np.float32)
        goal = self.task.goal if goal is None else goal
        return plan_chunk(self.q, self.pad_q[goal], self.config)

    def expert_all_goals(self) -> np.ndarray:
        """[8, chunk, 2]: what the expert would do now for each possible goal."""
        return np.stack([self.expert_chunk(k) for k in range(N_PADS)])

    # -- dynamics -----------------------------------------------------------------------------

    def step(self, delta) -> Optional[TaskResult]:
        """Apply one joint delta (clipped to the speed limit); a finished task's result or None."""
        c = self.config
        delta = np.asarray(delta, dtype=np.float64).reshape(-1)[:2]
        if not np.all(np.isfinite(delta)):
            delta = np.zeros(2)
        self.q = self.q + np.clip(delta, -c.max_step, c.max_step)
        self.q[0] = np.clip(self.q[0], -np.pi, np.pi)
        self.q[1] = np.clip(self.q[1], 0.0, np.pi)
        self.frame += 1
        task = self.task
        task.step += 1
        if self._distractor_left > 0:
            self._distractor_left -= 1
        elif task.step >= c.cue_frames and self.rng.random() < c.distractor_prob:
            self._distractor_left = c.distractor_frames
            self._distractor_colour = int(self.rng.integers(N_PADS))
            task.distractors += 1
        near = np.linalg.norm(self.tip() - self.pads[task.goal]) <= c.success_radius
        task.hold = task.hold + 1 if near else 0
        success = task.hold >= c.hold_frames
        if success or task.step >= task.go_step + c.reach_timeout:
            result = TaskResult(task.index, task.goal, bool(success), task.step, task.go_step,
                                task.distractors)
            self.results.append(result)
            self._new_task(task.index + 1)
            return result
        return None


def run_expert(env: CueReach, tasks: int, memory: bool = True, max_frames: int = 100_000,
               rng: Optional[np.random.Generator] = None) -> list[TaskResult]:
    """Run the scripted expert for `tasks` tasks; with `memory=False` it forgets the cue.

    The forgetful expert saw the cue while it was lit but keeps no memory of it: at GO it must
    guess a pad (uniformly among the pads it is not on), the best a memoryless policy can do.
    """
    rng = rng or np.random.default_rng(0)
    done: list[TaskResult] = []
    guess, guess_task = None, -1
    for _ in range(max_frames):
        if len(done) >= tasks:
            break
        goal = None
        if not memory:
            if guess_task != env.task.index:
                here = env.nearest_pad()
                guess = int(rng.choice([k for k in range(N_PADS) if k != here]))
                guess_task = env.task.index
            goal = guess
        result = env.step(env.expert_chunk(goal)[0])
        if result is not None:
            done.append(result)
    return done
