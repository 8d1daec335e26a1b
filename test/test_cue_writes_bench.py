"""bench/cue_writes_and_success.py: closed-loop tasks split by whether a cue frame was written."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'bench'))

import cue_writes_and_success as bench  # noqa: E402


def _task(goal, writes_at_cue, success):
    return {'goal': goal, 'writes_at_cue': writes_at_cue, 'success': success}


OUTCOMES = [_task(0, 3, True), _task(0, 0, True), _task(1, 0, False), _task(1, 2, False),
            _task(2, 1, True)]


def test_tasks_are_split_by_a_write_in_the_cue_frames_and_a_repeated_goal():
    s = bench.split(OUTCOMES)
    assert s['cue_written'] == {'tasks': 3, 'successes': 2}
    assert s['cue_not_written'] == {'tasks': 2, 'successes': 1}
    # task 1 repeats task 0's goal with no new write; task 2 does not repeat task 1's
    assert s['cue_not_written_same_goal_as_before'] == {'tasks': 1, 'successes': 1}


def test_tasks_are_counted_by_goal():
    assert bench.by_goal(OUTCOMES) == {
        0: {'tasks': 2, 'successes': 2, 'cue_written': 1},
        1: {'tasks': 2, 'successes': 0, 'cue_written': 1},
        2: {'tasks': 1, 'successes': 1, 'cue_written': 1}}


def test_the_command_reads_an_eval_results_file(tmp_path):
    results = tmp_path / 'r.json'
    results.write_text(json.dumps({'seed': 3, 'methods': {'aura': {'outcomes': OUTCOMES}}}))
    out = tmp_path / 'split.md'
    run = subprocess.run([sys.executable, 'bench/cue_writes_and_success.py', str(results),
                          '--out', str(out)], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    text = out.read_text()
    assert '| r.json | 3 | 2/3 (67%) | 1/2 (50%) | 1/1 (100%) |' in text
    assert '| r.json | 3 | 1 | 0/2 (0%) | 1/2 |' in text
