"""InputError: a bad observation, rejected before it can touch the memory state."""


class InputError(ValueError):
    """An observation the runtime refuses; `.reason` is a short slug for counting in diagnostics.

    Reasons: 'encoding', 'dtype', 'shape', 'empty', 'joint_count', 'nonfinite_joints',
    'nonfinite_features', 'state' (load_state got a wrong state).
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
