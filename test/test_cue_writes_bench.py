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


def _framed(goal, reached, write_frames, start):
    """A task of 100 frames from `start`: cue at start + 10, GO at start + 60."""
    return {'goal': goal, 'reached': reached, 'success': goal == reached, 'writes_at_cue': 0,
            'cue_frame': start + 10, 'go_frame': start + 60, 'end_frame': start + 100,
            'write_frames': [start + f for f in write_frames]}


def test_writes_are_split_by_phase_and_lost_tasks_by_the_previous_pad():
    outcomes = [_framed(0, 0, [10, 11, 15, 70], 0),       # won: 2 cue + 1 (onset + 5) + after GO
                # lost to task 0's pad: 2 in the first 5 frames after task 0 ended, 1 in the delay
                _framed(1, 0, [0, 4, 5, 12, 30, 61, 62], 100),
                _framed(2, 0, [], 200)]                  # lost, not to the previous pad (1)
    w = bench.writes_by_phase(outcomes)
    assert w['won'] == {'tasks': 1, 'task start': 0, 'before cue': 0, 'cue': 3, 'delay': 0,
                        'after GO': 1}
    assert w['lost'] == {'tasks': 2, 'task start': 1.0, 'before cue': 0.5, 'cue': 0.5,
                         'delay': 0.5, 'after GO': 1.0}
    assert bench.lost_to_previous_pad(outcomes) == {'lost': 2, 'at_previous_pad': 1}


def test_the_phase_table_appears_only_for_results_with_write_frames(tmp_path):
    framed = tmp_path / 'framed.json'
    framed.write_text(json.dumps({'seed': 0, 'methods': {'aura': {'outcomes': [
        _framed(0, 0, [10, 70], 0), _framed(1, 0, [12], 100)]}}}))
    old = tmp_path / 'old.json'
    old.write_text(json.dumps({'seed': 1, 'methods': {'aura': {'outcomes': OUTCOMES}}}))
    run = subprocess.run([sys.executable, 'bench/cue_writes_and_success.py', str(framed),
                          str(old)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert ('| framed.json | 0 | 1 / 1 | 0.00 / 0.00 | 0.00 / 0.00 | 1.00 / 1.00 | '
            '0.00 / 0.00 | 1.00 / 0.00 | 1 of 1 |') in run.stdout
    assert '| old.json | 1 | 1 / 1 |' not in run.stdout and '| old.json | 1 | 0 |' in run.stdout
