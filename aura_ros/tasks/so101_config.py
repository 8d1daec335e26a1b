"""The SO-101 cue-reach world's knobs: task timing (frames), geometry (metres), cameras.

The one source of the world's settings and their defaults: the world (so101.py), the simulator
node's parameters, the closed-loop evaluation, the recorder and the command line all take theirs
from `So101Config`. No MuJoCo here, so anything may read the defaults cheaply.
"""

from dataclasses import dataclass, fields, replace

from aura_ros.checks import is_int, is_num, need

#: Colour k names pad k (RGB 0-255). Pads are numbered from the arm's left to its right.
#: No yellow: the arm is yellow.
PAD_COLOURS = {'red': (235, 25, 25), 'blue': (30, 70, 250), 'magenta': (230, 40, 230),
               'cyan': (30, 220, 230)}

@dataclass(frozen=True)
class So101Config:
    """Task timing (in frames), geometry (metres) and cameras of SO-101 cue-reach."""

    width: int = 96
    height: int = 96
    wrist_camera: bool = False
    n_pads: int = 3
    frame_hz: float = 30.0
    substeps: int = 20              # physics steps per frame: 600 Hz at 30 frames/s
    rest_frames: int = 20           # at the start of every task: the arm returns home
    cue_frames: int = 5
    delay_min: int = 30             # frames from the cue's end to GO, uniform in [min, max]
    delay_max: int = 150
    reach_timeout: int = 90         # frames after GO before the task fails
    hold_frames: int = 5            # consecutive frames on a pad (or off home) that count
    success_radius: float = 0.03
    home_radius: float = 0.05       # before GO the tool must stay this close to home
    hover: float = 0.05             # reach target: this high above the pad's top
    pad_radius: float = 0.22        # pads on an arc around the shoulder pan axis
    pad_spread_deg: float = 80.0    # angle between the outermost pads
    distractor_prob: float = 0.02   # chance per frame that a flash starts (outside the cue)
    distractor_frames: int = 5
    decoy_lamp_share: float = 0.5   # share of flashes on the DECOY lamp (rest: decoy colours)
    mesh_cell: float = 0.002        # vertex clustering grid; 0 keeps the full meshes

    def __post_init__(self) -> None:
        for name in ('width', 'height', 'n_pads', 'substeps', 'rest_frames', 'cue_frames',
                     'delay_min', 'delay_max', 'reach_timeout', 'hold_frames',
                     'distractor_frames'):
            value = getattr(self, name)
            need(is_int(value, 1), ValueError,
                 f'So101Config.{name} must be a positive integer, got {value!r}')
        if not 2 <= self.n_pads <= len(PAD_COLOURS):
            raise ValueError(f'So101Config.n_pads must be in [2, {len(PAD_COLOURS)}], '
                             f'got {self.n_pads}')
        if min(self.width, self.height) < 16:
            raise ValueError('So101Config.width and height must be >= 16 pixels')
        if self.delay_max < self.delay_min:
            raise ValueError('So101Config.delay_max must be >= delay_min')
        need(is_num(self.frame_hz) and self.frame_hz > 0, ValueError,
             f'So101Config.frame_hz must be > 0, got {self.frame_hz}')
        for name in ('distractor_prob', 'decoy_lamp_share'):
            need(is_num(getattr(self, name), 0.0, 1.0), ValueError,
                 f'So101Config.{name} must be in [0, 1]')
        for name in ('success_radius', 'home_radius', 'hover', 'pad_radius'):
            need(is_num(getattr(self, name)) and getattr(self, name) > 0, ValueError,
                 f'So101Config.{name} must be > 0')
        if not 0.12 <= self.pad_radius <= 0.3:
            raise ValueError(f'So101Config.pad_radius {self.pad_radius} m is outside the '
                             'reach of the SO-101 (0.12 to 0.3 m)')
        need(is_num(self.mesh_cell, 0.0), ValueError, 'So101Config.mesh_cell must be >= 0')

    @property
    def period(self) -> float:
        """Seconds per frame (= the action period)."""
        return 1.0 / self.frame_hz

    @property
    def cameras(self) -> tuple[str, ...]:
        return ('image', 'wrist_image') if self.wrist_camera else ('image',)

    @property
    def pad_colours(self) -> tuple[str, ...]:
        return tuple(PAD_COLOURS)[:self.n_pads]

    def with_knobs(self, **knobs) -> 'So101Config':
        """This config with the given knobs changed; a knob given as None keeps its value (a
        command-line option left out)."""
        return replace(self, **{k: v for k, v in knobs.items() if v is not None})


#: The world's defaults, for the parameter tables and argument defaults that restate none.
DEFAULT = So101Config()
KNOBS = tuple(f.name for f in fields(So101Config))
