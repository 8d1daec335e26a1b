"""Closed-loop success split by whether the gate wrote a cue frame in that task: does a learned
gate lose tasks because it skipped the cue, or also where it wrote it?

    python bench/cue_writes_and_success.py RESULTS.json [...] [--method aura] [--out OUT.md]

RESULTS.json is what `python -m aura_ros eval so101 --out` wrote: each task's outcome with
`writes_at_cue` (the gate's writes in the cue frames, onset .. onset + 5, counted from
/aura/gate). Also the tasks whose goal is the previous task's (a memory that kept the last cue
is right there without a new write). And the same by goal: a gate that never writes one goal's
cue shows as that goal's row with no cue written. Where results carry each task's `write_frames`
(eval so101 since 2026-12-07): writes per task by phase (the task's start: its first 5 frames
after the last task ended, where a gate whose writes fade the memory clears it; the rest before
the cue; the cue; the delay between cue and GO, where a write could put a distractor over the
cue; after GO) for won and lost tasks, and how many lost tasks went to the previous task's pad.
"""

import argparse
import json
import sys
from pathlib import Path


def split(outcomes: list[dict]) -> dict:
    """Tasks and successes where a cue frame was written, where not, and where not with the
    previous task's goal."""
    def count(tasks):
        return {'tasks': len(tasks), 'successes': sum(bool(t['success']) for t in tasks)}

    written = [t for t in outcomes if t['writes_at_cue'] > 0]
    skipped = [t for t in outcomes if t['writes_at_cue'] == 0]
    repeated = [t for prev, t in zip(outcomes, outcomes[1:], strict=False)
                if t['writes_at_cue'] == 0 and t['goal'] == prev['goal']]
    return {'cue_written': count(written), 'cue_not_written': count(skipped),
            'cue_not_written_same_goal_as_before': count(repeated)}


def by_goal(outcomes: list[dict]) -> dict:
    """Per goal: tasks, successes and tasks with a cue frame written."""
    goals = {}
    for t in outcomes:
        g = goals.setdefault(t['goal'], {'tasks': 0, 'successes': 0, 'cue_written': 0})
        g['tasks'] += 1
        g['successes'] += bool(t['success'])
        g['cue_written'] += t['writes_at_cue'] > 0
    return dict(sorted(goals.items()))


PHASES = ('task start', 'before cue', 'cue', 'delay', 'after GO')
START_FRAMES = 5


def phase(task: dict, frame: int, start: int) -> str:
    """Which part of its task an episode frame is in (the task start: `start`, the frame the
    last task ended on, .. + 4; the cue: onset .. onset + 5)."""
    if frame < min(start + START_FRAMES, task['cue_frame']):
        return 'task start'
    if frame < task['cue_frame']:
        return 'before cue'
    if frame <= task['cue_frame'] + 5:
        return 'cue'
    return 'delay' if frame < task['go_frame'] else 'after GO'


def writes_by_phase(outcomes: list[dict]) -> dict:
    """{'won' | 'lost': {'tasks': n, phase: mean writes per task}} from `write_frames`."""
    starts = [0] + [t['end_frame'] for t in outcomes[:-1]]
    out = {}
    for key, won in (('won', True), ('lost', False)):
        tasks = [(t, s) for t, s in zip(outcomes, starts, strict=True)
                 if bool(t['success']) == won]
        row = {'tasks': len(tasks)}
        for name in PHASES:
            n = sum(phase(t, f, s) == name for t, s in tasks for f in t['write_frames'])
            row[name] = n / len(tasks) if tasks else None
        out[key] = row
    return out


def lost_to_previous_pad(outcomes: list[dict]) -> dict:
    """Lost tasks whose goal differs from the previous task's, and how many of them ended on
    the previous task's pad (a memory that kept the last cue over the new one would)."""
    lost = [(prev, t) for prev, t in zip(outcomes, outcomes[1:], strict=False)
            if not t['success'] and t['goal'] != prev['goal'] and t.get('reached') is not None]
    return {'lost': len(lost), 'at_previous_pad': sum(t['reached'] == prev['goal']
                                                      for prev, t in lost)}


def share(c: dict) -> str:
    return f'{c["successes"]}/{c["tasks"]}' + (f' ({100 * c["successes"] / c["tasks"]:.0f}%)'
                                               if c['tasks'] else '')


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('results', nargs='+', type=Path)
    ap.add_argument('--method', default='aura')
    ap.add_argument('--out', type=Path)
    args = ap.parse_args()
    lines = [f'# Closed-loop success by cue writes ({args.method})', '',
             f'Command: `python {" ".join(sys.argv)}`', '',
             '| results | seed | cue frame written: successes | not written | '
             "not written, the previous task's goal |", '|---|---:|---|---|---|']
    results = [(path, json.loads(path.read_text())) for path in args.results]
    for path, result in results:
        s = split(result['methods'][args.method]['outcomes'])
        lines.append(f'| {path.name} | {result["seed"]} | '
                     f'{share(s["cue_written"])} | {share(s["cue_not_written"])} | '
                     f'{share(s["cue_not_written_same_goal_as_before"])} |')
    lines += ['', 'By goal (pad): successes / tasks, and tasks with a cue frame written', '',
              '| results | seed | goal | successes | cue written |', '|---|---:|---:|---|---:|']
    for path, result in results:
        for goal, g in by_goal(result['methods'][args.method]['outcomes']).items():
            lines.append(f'| {path.name} | {result["seed"]} | {goal} | {share(g)} | '
                         f'{g["cue_written"]}/{g["tasks"]} |')
    framed = [(path, result) for path, result in results
              if all('write_frames' in t for t in result['methods'][args.method]['outcomes'])]
    if framed:
        lines += ['', 'Writes per task by phase (won / lost tasks), and lost tasks with a new '
                  "goal that ended on the previous task's pad", '',
                  '| results | seed | tasks won / lost | ' + ' | '.join(PHASES)
                  + ' | lost at the previous pad |',
                  '|---|---:|---|' + '---:|' * (len(PHASES) + 1)]
        for path, result in framed:
            outcomes = result['methods'][args.method]['outcomes']
            w = writes_by_phase(outcomes)
            cells = [f'{w["won"][p]:.2f} / ' + (f'{w["lost"][p]:.2f}' if w['lost']['tasks']
                                                else '-') for p in PHASES]
            prev = lost_to_previous_pad(outcomes)
            lines.append(f'| {path.name} | {result["seed"]} | {w["won"]["tasks"]} / '
                         f'{w["lost"]["tasks"]} | ' + ' | '.join(cells)
                         + f' | {prev["at_previous_pad"]} of {prev["lost"]} |')
    text = '\n'.join(lines) + '\n'
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
