"""The bundled cue-reach model: a valid model directory that solves the task in closed loop."""

from pathlib import Path

import numpy as np
import pytest

from aura_ros.tasks.cue_reach import ACTION_NAMES, JOINT_NAMES
from aura_ros.training.cue_reach import rollout
from aura_ros.training.cue_reach_eval import Backbone, load_methods, task_config, wilson

MODEL = Path(__file__).resolve().parents[1] / 'models' / 'cue_reach'
needs_model = pytest.mark.skipif(not (MODEL / 'model.yaml').is_file(),
                                 reason='no bundled model (python -m aura_ros train cue-reach)')


def test_wilson_interval():
    assert wilson(0, 100)[0] == 0.0 and wilson(0, 100)[1] == pytest.approx(0.0370, abs=1e-4)
    lo, hi = wilson(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)
    assert wilson(100, 100)[1] == pytest.approx(1.0)


@pytest.fixture(scope='module')
def bundled():
    from aura_ros.runtime import load_model_dir

    spec = load_model_dir(MODEL)
    return spec, Backbone(MODEL, spec), load_methods(MODEL, spec)


@needs_model
def test_bundled_model_matches_the_task(bundled):
    spec, _, _ = bundled
    assert spec.joint_names == JOINT_NAMES and spec.action_names == ACTION_NAMES
    assert (spec.image.height, spec.image.width, spec.chunk) == (64, 64, 4)
    assert sum(f.stat().st_size for f in MODEL.glob('*')) < 4_000_000   # a few MB at most


@needs_model
def test_bundled_model_reaches_cued_pads_with_few_writes(bundled):
    """ONNX backbone + AURA in closed loop, on seeds neither training nor evaluation used."""
    spec, backbone, models = bundled
    task = task_config(spec)
    results, lamp_writes, _ = rollout(models['aura'], backbone, task, [42, 43], 3)
    assert np.mean([r.success for r in results]) >= 5 / 6
    writes, frames = np.mean([r.writes for r in results]), np.mean([r.steps for r in results])
    assert writes < frames / 5          # always-write would write on every frame
    assert lamp_writes['cue'][0] > 0    # it writes when the cue is lit
    memoryless, _, _ = rollout(models['no_memory'], backbone, task, [42, 43], 3)
    assert np.mean([r.success for r in memoryless]) <= 0.5
