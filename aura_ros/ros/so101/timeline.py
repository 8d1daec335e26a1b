"""The SO-101 gate timeline: camera frames of one task above what the lamps showed and what the
write gate did, so one picture shows WHEN the memory writes (at the cue, not at distractors).

Input is plain data from a closed-loop run (closed_loop.py beside it keeps it): the simulator's
events, the gate per frame (wrote, p) and the camera images per frame. No ROS here.
"""

from pathlib import Path
from typing import Optional

import numpy as np

from aura_ros.tasks.so101 import DECOY_COLOURS, GO_COLOUR, PAD_COLOURS


def _rgb(name_or_rgb) -> tuple:
    rgb = {**PAD_COLOURS, **DECOY_COLOURS}.get(name_or_rgb, name_or_rgb)
    return tuple(c / 255 for c in rgb)


def choose_task(events: list[dict], frames: set[int]) -> Optional[dict]:
    """The outcome event of the first task whose frames were all kept, preferring one with a
    distractor flash during its delay (the picture should show one)."""
    outcomes = [e for e in events if e['event'] in ('success', 'failure')]
    start, complete = 0, []
    for outcome in outcomes:
        if all(f in frames for f in range(start + 1, outcome['end_frame'] + 1)):
            complete.append((start, outcome))
        start = outcome['end_frame']
    if not complete:
        return None
    with_flash = [(s, o) for s, o in complete if o['distractors'] > 0 and o['success']] + \
        [(s, o) for s, o in complete if o['distractors'] > 0]
    start, outcome = (with_flash or complete)[0]
    return {**outcome, 'start_frame': start}


def key_frames(task: dict, events: list[dict]) -> list[tuple[int, str]]:
    """(frame, label) of the thumbnails: cue, distractors, the delay, GO, the end."""
    cue, go, end = task['cue_frame'], task['go_frame'], task['end_frame']
    keys = [(task['start_frame'] + 3, 'rest'), (cue + 2, 'CUE')]
    flashes = [e for e in events if e['event'] == 'distractor' and e['task'] == task['task']
               and cue < e['frame'] < go]
    for flash in flashes[:2]:
        keys.append((flash['frame'] + 2, f'distractor\n({flash["lamp"]} lamp, {flash["colour"]})'))
    lit = {f for e in flashes for f in range(e['frame'] - 1, e['frame'] + 6)}
    dark = [f for f in range(cue + 8, go - 2) if f not in lit]
    if dark:
        keys.append((dark[len(dark) // 2], 'delay (dark)'))
    keys.append((go + 1, 'GO'))
    keys.append(((go + end) // 2, 'reach'))
    keys.append((end, 'SUCCESS' if task['success'] else f'failure ({task["reason"]})'))
    keys = sorted({f: label for f, label in keys}.items())
    return keys


def plot_timeline(events: list[dict], gate: dict[int, tuple[bool, float]],
                  images: dict[int, np.ndarray], threshold: float, out: Path,
                  title: str = '') -> Path:
    """Write the contact sheet + gate timeline of one task to `out` (PNG)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    task = choose_task(events, set(images))
    if task is None:
        raise ValueError('no task of the run has all its frames kept (raise --keep-frames)')
    keys = [(f, label) for f, label in key_frames(task, events) if f in images]
    lo, hi = task['start_frame'], min(task['end_frame'] + 15, max(images))
    fig = plt.figure(figsize=(2.0 * len(keys), 6.4))
    grid = fig.add_gridspec(3, len(keys), height_ratios=[1.35, 0.45, 1.25], hspace=0.35)
    for i, (frame, label) in enumerate(keys):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(images[frame], interpolation='nearest')
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f'{chr(65 + i)}: {label}', fontsize=9)
        ax.set_xlabel(f'frame {frame}', fontsize=8)
    lamps = fig.add_subplot(grid[1, :])
    rows = {'CUE lamp': 2, 'DECOY lamp': 1, 'GO lamp': 0}
    cue_colour = _rgb(PAD_COLOURS[_cue_colour(task, events)])
    lamps.broken_barh([(task['cue_frame'], 5)], (2 - 0.4, 0.8), color=cue_colour)
    lamps.text(task['cue_frame'] + 6, 2, f'cue: {_cue_colour(task, events)} = pad '
               f'{task["goal"]}', va='center', fontsize=8)
    for flash in (e for e in events if e['event'] == 'distractor' and e['task'] == task['task']):
        row = rows['CUE lamp' if flash['lamp'] == 'cue' else 'DECOY lamp']
        lamps.broken_barh([(flash['frame'], 5)], (row - 0.4, 0.8), color=_rgb(flash['colour']),
                          edgecolor='black', linewidth=0.5)
    lamps.broken_barh([(task['go_frame'], task['end_frame'] - task['go_frame'])], (-0.4, 0.8),
                      color=_rgb(GO_COLOUR))
    lamps.set_yticks(list(rows.values()), list(rows))
    lamps.set_xlim(lo, hi)
    lamps.set_ylim(-0.6, 2.6)
    lamps.tick_params(labelbottom=False, labelsize=8)
    ax = fig.add_subplot(grid[2, :], sharex=lamps)
    frames = np.arange(lo, hi + 1)
    p = np.array([gate.get(f, (False, np.nan))[1] for f in frames])
    wrote = np.array([gate.get(f, (False, np.nan))[0] for f in frames])
    ax.plot(frames, p, color='tab:blue', linewidth=1.2, label='gate probability p')
    ax.axhline(threshold, color='grey', linestyle='--', linewidth=1,
               label=f'threshold {threshold:g}')
    ax.vlines(frames[wrote], 0, 1, color='tab:red', linewidth=1.2, alpha=0.8,
              label=f'write ({int(wrote.sum())} in this window)')
    for i, (frame, _) in enumerate(keys):
        ax.axvline(frame, color='black', linestyle=':', linewidth=0.7)
        ax.text(frame, 1.04, chr(65 + i), ha='center', fontsize=8)
    for name, frame in (('cue', task['cue_frame']), ('GO', task['go_frame'])):
        ax.axvspan(frame, frame + (5 if name == 'cue' else 1), color='gold', alpha=0.25)
    ax.set_ylim(0, 1.1)
    ax.set_xlim(lo, hi)
    ax.set_xlabel('episode frame (30 per second)')
    ax.set_ylabel('write gate')
    ax.legend(loc='center right', fontsize=8, framealpha=0.9)
    if title:
        fig.suptitle(title, fontsize=11)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches='tight')
    plt.close(fig)
    return out


def _cue_colour(task: dict, events: list[dict]) -> str:
    for event in events:
        if event['event'] == 'cue' and event['task'] == task['task']:
            return event['colour']
    return list(PAD_COLOURS)[task['goal']]
