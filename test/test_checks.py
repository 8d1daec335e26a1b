"""The value checks the configs share (aura_ros/checks.py), and configs that use them."""

import math

import pytest

from aura_ros.checks import is_int, is_num, need
from aura_ros.memory import MemoryConfig
from aura_ros.memory.config import ConfigError
from aura_ros.tasks.so101_config import So101Config


def test_an_integer_is_never_a_bool_and_a_number_is_finite():
    assert is_int(3) and is_int(0, 0) and not is_int(0, 1)
    assert not is_int(True) and not is_int(2.0) and not is_int('2')
    assert is_num(0.5, 0, 1) and is_num(1, 0, 1) and not is_num(1.5, 0, 1)
    for bad in (True, math.nan, math.inf, -math.inf, '1', None):
        assert not is_num(bad), bad


def test_need_raises_the_callers_own_error_with_its_message():
    need(True, ConfigError, 'never raised')
    with pytest.raises(ConfigError, match='MemoryConfig.x must be'):
        need(False, ConfigError, 'MemoryConfig.x must be')


@pytest.mark.parametrize('field,value',
                         [('d_key', True), ('d_key', 0), ('gate_threshold', math.nan)])
def test_memory_config_names_the_field(field, value):
    with pytest.raises(ConfigError, match=f'MemoryConfig.{field} must be'):
        MemoryConfig(**{field: value})


@pytest.mark.parametrize('field,value', [('frame_hz', '30'), ('distractor_prob', None),
                                         ('hover', 'high'), ('mesh_cell', math.nan)])
def test_so101_config_refuses_a_non_number_by_name(field, value):
    """A string or None among the SO-101 knobs is refused as the field's ValueError (it
    was a TypeError from a comparison, or passed unnoticed as NaN)."""
    with pytest.raises(ValueError, match=f'So101Config.{field} must be'):
        So101Config(**{field: value})
