"""The Pusher show-then-hide world's knobs: task timing (frames), geometry (metres), cameras.

The one source of the world's settings and their defaults (the world in pusher.py, the
simulator node's parameters and the command line read theirs here). No MuJoCo here, so the
command line may read the defaults cheaply.
"""

from dataclasses import dataclass, fields, replace

from aura_ros.checks import is_int, is_num, need

CAMERAS = ('front', 'wrist')


@dataclass(frozen=True)
class PusherConfig:
    """Task timing (frames), geometry (metres) and cameras of Pusher show-then-hide."""

    front_size: int = 96            # square front camera, published raw
    wrist_size: int = 64            # square wrist camera, published JPEG-compressed
    n_targets: int = 3
    frame_hz: float = 20.0
    substeps: int = 5               # physics steps per frame: 100 Hz at 20 frames/s
    rest_frames: int = 25
    cue_frames: int = 5
    delay_min: int = 20             # frames from the cue's end to GO, uniform in [min, max]
    delay_max: int = 100
    reach_timeout: int = 80
    hold_frames: int = 5
    success_radius: float = 0.06
    home_radius: float = 0.08
    touch_height: float = 0.06      # the touch point: this high above the target's centre
    target_radius: float = 0.62     # targets on an arc around the shoulder pan axis
    target_spread_deg: float = 70.0
    distractor_prob: float = 0.02   # chance per frame that a flash starts (outside the cue)
    distractor_frames: int = 5
    decoy_lamp_share: float = 0.5   # share of flashes on the DECOY lamp (rest: a target)

    def __post_init__(self) -> None:
        for name in ('front_size', 'wrist_size', 'n_targets', 'substeps', 'rest_frames',
                     'cue_frames', 'delay_min', 'delay_max', 'reach_timeout', 'hold_frames',
                     'distractor_frames'):
            need(is_int(getattr(self, name), 1), ValueError,
                 f'PusherConfig.{name} must be a positive integer, got {getattr(self, name)!r}')
        need(2 <= self.n_targets <= 5, ValueError,
             f'PusherConfig.n_targets must be in [2, 5], got {self.n_targets}')
        need(min(self.front_size, self.wrist_size) >= 16, ValueError,
             'PusherConfig.front_size and wrist_size must be >= 16 pixels')
        need(self.delay_max >= self.delay_min, ValueError,
             'PusherConfig.delay_max must be >= delay_min')
        need(is_num(self.frame_hz) and self.frame_hz > 0, ValueError,
             f'PusherConfig.frame_hz must be > 0, got {self.frame_hz}')
        for name in ('distractor_prob', 'decoy_lamp_share'):
            need(is_num(getattr(self, name), 0.0, 1.0), ValueError,
                 f'PusherConfig.{name} must be in [0, 1]')

    @property
    def period(self) -> float:
        return 1.0 / self.frame_hz

    @property
    def cameras(self) -> tuple[str, ...]:
        return CAMERAS

    def with_knobs(self, **knobs) -> 'PusherConfig':
        """This config with the given knobs changed; None keeps a knob's value."""
        return replace(self, **{k: v for k, v in knobs.items() if v is not None})


DEFAULT = PusherConfig()
KNOBS = tuple(f.name for f in fields(PusherConfig))
