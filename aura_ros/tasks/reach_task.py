"""The chained show-then-hide reach task that both MuJoCo arm worlds (SO-101, Pusher) run.

Why one module: the worlds differ in arm, scene, cameras and cue, but judge a task the same way
(rest -> cue -> random delay -> GO -> hold the tool on one of the look-alike goals), emit the
same events and score the same outcomes, so one evaluator serves both. Each world names its own
wrong-goal reason (`wrong_reason`: 'wrong_pad', 'wrong_target'), which recorded bags and
results files carry. NumPy only: the worlds do the physics and rendering.
"""

from dataclasses import dataclass
from typing import Callable, Optional, Union

import numpy as np

#: Joint targets for one frame, or a function of the sim time giving them at every substep.
Targets = Union[np.ndarray, Callable[[float], np.ndarray]]


@dataclass
class TaskOutcome:
    """One finished task of the long episode."""

    task: int
    goal: int
    success: bool
    reason: str                 # 'reached' | the world's wrong_reason | 'early' | 'timeout'
    reached: Optional[int]      # the goal held over, if any
    frames: int                 # frames from the task's first (rest) frame to its end
    cue_frame: int              # episode frame of the cue onset
    go_frame: int               # episode frame at which GO turned on
    end_frame: int
    distractors: int

    def to_dict(self) -> dict:
        return dict(vars(self))


@dataclass
class ReachTask:
    """The running task's state."""

    index: int
    goal: int
    go_step: int                # task step at which GO turns on
    start_frame: int
    step: int = 0
    hold: int = 0
    held: Optional[int] = None  # the goal the tool is held over now
    away: int = 0               # frames away from home before GO
    distractors: int = 0


class ChainedReachTasks:
    """The task half of a world: tasks chain without a reset, judged from the tool position.

    The world sets `config` (rest_frames, cue_frames, delay_min/max, hold_frames, home_radius,
    success_radius, reach_timeout, substeps, period), `model`, `rng`, `frame`, `task`,
    `outcomes`, `home_point`, `reach_points` ([n_goals, 3]) and `_renderer`, and defines
    `tool()`, `_actuate(q)` (one physics substep), `_forward()` (kinematics after a frame),
    `_flash_events()` (its distractors) and `_cue_fields()` (what its cue event carries).
    """

    wrong_reason = 'wrong_goal'

    def _new_task(self, index: int) -> None:
        c = self.config
        goal = int(self.rng.integers(len(self.reach_points)))
        delay = int(self.rng.integers(c.delay_min, c.delay_max + 1))
        self.task = ReachTask(index=index, goal=goal,
                              go_step=c.rest_frames + c.cue_frames + delay,
                              start_frame=self.frame)

    @property
    def time(self) -> float:
        """Sim seconds since the episode start (frame * period)."""
        return self.frame * self.config.period

    @property
    def cue_step(self) -> int:
        return self.config.rest_frames

    @property
    def cue_on(self) -> bool:
        return self.cue_step <= self.task.step < self.cue_step + self.config.cue_frames

    @property
    def cue_seen(self) -> bool:
        """The current task's cue has been shown (privileged: the expert may now know the goal)."""
        return self.task.step >= self.cue_step

    @property
    def go(self) -> bool:
        return self.task.step >= self.task.go_step

    @property
    def goal(self) -> int:
        return self.task.goal

    def joint_limits(self) -> dict[str, tuple[float, float]]:
        """The position limits of the limited joints of `joint_names` in the loaded model: what
        the simulator publishes as its robot_description, so a recorded bag carries them."""
        return model_joint_limits(self.model, self.joint_names)

    def close(self) -> None:
        """Free the GL context (rendering again makes a new one)."""
        if self._renderer is not None:
            self._closer()
            self._renderer = None

    def step(self, targets: Targets) -> list[dict]:
        """Advance one frame of physics under joint targets (joint_names order, or a function
        of the sim time); the task events of the new frame (dicts, see the world's EVENTS)."""
        dt = self.model.opt.timestep
        n = len(self.joint_names)
        for i in range(self.config.substeps):
            q = np.asarray(targets(self.time + i * dt) if callable(targets) else targets,
                           dtype=np.float64)
            if q.shape != (n,) or not np.isfinite(q).all():
                raise ValueError(f'joint targets must be {n} finite numbers, got {q!r}')
            self._actuate(q)
        self._forward()
        self.frame += 1
        self.task.step += 1
        events = self._advance_task()
        for event in events:
            event.setdefault('frame', self.frame)
            event.setdefault('time', round(self.time, 6))
        return events

    def _event(self, name: str, /, **fields) -> dict:
        return {'event': name, 'task': self.task.index, **fields}

    def _advance_task(self) -> list[dict]:
        task = self.task
        events = []
        if task.step == self.cue_step:
            events.append(self._event('cue', goal=task.goal, **self._cue_fields()))
        if task.step == task.go_step:
            events.append(self._event('go', goal=task.goal))
        events += self._flash_events()
        outcome = self._judge()
        if outcome is not None:
            self.outcomes.append(outcome)
            events.append(self._event('success' if outcome.success else 'failure',
                                      **{k: v for k, v in outcome.to_dict().items()
                                         if k != 'task'}))
            self._new_task(task.index + 1)
        return events

    def _judge(self) -> Optional[TaskOutcome]:
        """The task's outcome if it ended on this frame."""
        c, task = self.config, self.task
        if task.step < self.cue_step:
            return None
        tool = self.tool()
        reason, reached = None, None
        if not self.go:
            away = np.linalg.norm(tool - self.home_point) > c.home_radius
            task.away = task.away + 1 if away else 0
            if task.away >= c.hold_frames:
                reason = 'early'
        else:
            distance = np.linalg.norm(self.reach_points - tool, axis=1)
            near = int(np.argmin(distance))
            if distance[near] <= c.success_radius:
                task.hold = task.hold + 1 if task.held == near else 1
                task.held = near
            else:
                task.hold, task.held = 0, None
            if task.hold >= c.hold_frames:
                reached = near
                reason = 'reached' if near == task.goal else self.wrong_reason
            elif task.step >= task.go_step + c.reach_timeout:
                reason = 'timeout'
        if reason is None:
            return None
        start = task.start_frame
        return TaskOutcome(task=task.index, goal=task.goal, success=reason == 'reached',
                           reason=reason, reached=reached, frames=task.step,
                           cue_frame=start + self.cue_step, go_frame=start + task.go_step,
                           end_frame=self.frame, distractors=task.distractors)


def model_joint_limits(model, names) -> dict[str, tuple[float, float]]:
    """{joint: (lower, upper)} of the joints `names` of a MuJoCo model that have a range."""
    limits = {}
    for name in names:
        i = model.joint(name).id
        if model.jnt_limited[i]:
            limits[name] = (float(model.jnt_range[i, 0]), float(model.jnt_range[i, 1]))
    return limits


def drive(world: ChainedReachTasks, expert, tasks: int, max_frames: int) -> list[TaskOutcome]:
    """Drive `world` with an expert (act(q, goal, go) -> targets; it learns the goal only once
    the cue was shown) until `tasks` more tasks ended or `max_frames` passed."""
    start = len(world.outcomes)
    for _ in range(max_frames):
        if len(world.outcomes) - start >= tasks:
            break
        goal = world.goal if world.cue_seen else None
        world.step(expert.act(world.joint_positions(), goal, world.go))
    return world.outcomes[start:]


def summarise(outcomes: list[dict]) -> dict:
    """Score a run from its 'success' / 'failure' events (or TaskOutcome dicts): one per task."""
    wins = sum(bool(o['success']) for o in outcomes)
    reasons: dict[str, int] = {}
    for o in outcomes:
        reasons[o['reason']] = reasons.get(o['reason'], 0) + 1
    return {'tasks': len(outcomes), 'successes': wins,
            'success_rate': wins / len(outcomes) if outcomes else None, 'reasons': reasons}


def shrink(pixels: np.ndarray, size: int) -> np.ndarray:
    """A square render cut down to size x size by block averaging (size divides it) or a copy."""
    if pixels.shape[0] == size:
        return pixels.copy()
    k = pixels.shape[0] // size
    cut = pixels[:size * k, :size * k].reshape(size, k, size, k, 3).mean((1, 3))
    return cut.round().astype(np.uint8)
