"""Whether an observation's stamp still admits a step: checked before the memory state is touched.

An observation is refused, each by its own reason, when it is

    stale_image      older than max_obs_age_s (node clock);
    future_image     more than max_obs_age_s in the future (accepted, it would make every later
                     frame 'out_of_order' until its stamp passes);
    stale_for_chunk  so old that even the last point of its chunk, `chunk x action_period_s`
                     after its stamp, is less than `min_lead_s` ahead: no point of its chunk
                     could ever be published, so it is not stepped and the memory is not written
                     from it (a camera 0.45 s behind the clock against a 8 x 33 ms chunk).

The effective age limit is therefore min(max_obs_age_s, chunk horizon - min_lead_s). The same
check is used for a camera frame before it may wait for a camera set (frame_sync.py), so a frame
no set can ever use never enters the set buffer. Before a step (`check_step`) it is also refused

    out_of_order     not newer than the robot's last stepped observation;
    no_joints        the model reads joints and no valid joint state came yet;
    stale_joints     the latest joint state is more than max_obs_age_s older than it;

and a joint state is refused as `future_joints` when more than max_obs_age_s ahead of the clock
(kept, it would pass every staleness check of every image after it). Pure Python, no clock of
its own: the node passes its clock's time.
"""

from dataclasses import dataclass
from typing import Optional

from .errors import InputError


@dataclass(frozen=True)
class Admission:
    """The age limits of one model and node: `max_age_s` (max_obs_age_s), the model's chunk
    (`points` x `period_s`) and the lead a chunk point needs (`min_lead_s`)."""

    max_age_s: float
    period_s: float
    points: int
    min_lead_s: float

    @property
    def horizon_s(self) -> float:
        """How long after its stamp an observation's last chunk point is meant."""
        return self.points * self.period_s

    @property
    def usable_age_s(self) -> float:
        """The oldest an observation may be and still have a chunk point to publish."""
        return min(self.max_age_s, self.horizon_s - self.min_lead_s)

    def check(self, age_s: float, what: str = 'image', step_s: float = 0.0) -> None:
        """InputError unless an observation `age_s` old (negative: from the future) is usable.

        step_s: how long a step takes now (said in the stale_for_chunk message only).
        """
        if age_s > self.max_age_s:
            raise InputError('stale_image', f'{what} is {age_s:.3f} s old '
                                            f'(max_obs_age_s {self.max_age_s:g})')
        if -age_s > self.max_age_s:
            raise InputError('future_image', f'{what} stamp is {-age_s:.3f} s in the future '
                                             f'(max_obs_age_s {self.max_age_s:g})')
        if age_s > self.horizon_s - self.min_lead_s:
            raise InputError('stale_for_chunk', (
                f'{what} is {age_s:.3f} s old but its chunk ends {self.horizon_s:.3f} s after '
                f'its stamp ({self.points} x {self.period_s * 1e3:.1f} ms) and a point needs '
                f'{self.min_lead_s:g} s of lead (chunk_min_lead_s): no point could be '
                f'published (a step takes {step_s * 1e3:.1f} ms); not stepped, the memory '
                'is not written. The camera lags the clock: fix its stamps or latency'))

    def check_joint_state(self, ahead_s: float) -> None:
        """InputError unless a joint state `ahead_s` ahead of the clock may be kept."""
        if ahead_s > self.max_age_s:
            raise InputError('future_joints', f'joint state stamp is {ahead_s:.3f} s in the '
                                              f'future (max_obs_age_s {self.max_age_s})')

    def check_step(self, stamp: float, now: float, last_stamp: float,
                   joint_stamp: Optional[float], needs_joints: bool, what: str = 'image',
                   step_s: float = 0.0) -> None:
        """InputError unless an observation stamped `stamp` may be stepped now: its age, its
        order after `last_stamp` (the robot's last stepped one) and, when the model reads
        joints, the joint state stamped `joint_stamp` (None: none yet) that goes with it."""
        self.check(now - stamp, what, step_s)
        if stamp <= last_stamp:
            raise InputError('out_of_order', f'{what} stamp {stamp:.3f} is not after the last '
                                             f'processed one ({last_stamp:.3f})')
        if not needs_joints:
            return
        if joint_stamp is None:
            raise InputError('no_joints', 'no valid joint state received yet')
        if stamp - joint_stamp > self.max_age_s:
            raise InputError('stale_joints', f'latest joint state is {stamp - joint_stamp:.3f} s '
                                             f'older than the {what} (max_obs_age_s '
                                             f'{self.max_age_s})')
