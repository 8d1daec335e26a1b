"""The value checks the configs share: is it an integer, a finite number, and `need` to raise.

Every config keeps its own error class and its own field-named message (`MemoryConfig.d_key
must be a positive integer, got 0`); what they share is what counts as an integer (not a bool:
`True` is an int in Python) and as a number (int or float, not a bool, finite). Standard library
only, so any layer may use it.
"""

import math
from typing import Any


def is_int(value: Any, low: float = -math.inf) -> bool:
    """An int (not a bool) that is >= low."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def is_num(value: Any, low: float = -math.inf, high: float = math.inf) -> bool:
    """A finite int or float (not a bool) in [low, high]."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value) and low <= value <= high


def need(ok: bool, error: type, message: str) -> None:
    """Raise `error(message)` unless `ok`: one line per rule in a config's check."""
    if not ok:
        raise error(message)
