"""The fleet benchmark's picture: p99 latency and process RSS against the number of robots.

Drawn from the committed results (docs/results/fleet.json, in process; fleet_dds.json, over
DDS, one fleet node beside N separate `aura_node` processes), so it can be redrawn without
re-running either: `python -m aura_ros bench fleet --plot`.
"""

import json
from pathlib import Path

MIB = 2 ** 20


def _series(rows: list[dict], separate: bool, p99_key: str) -> tuple[list, list, list]:
    """(N, p99 ms, RSS MiB) of the rows of one kind (fleet node or separate processes)."""
    rows = sorted((r for r in rows if bool(r.get('separate', False)) == separate),
                  key=lambda r: r['robots'])
    return ([r['robots'] for r in rows], [r[p99_key] for r in rows],
            [r['rss_bytes'] / MIB if r.get('rss_bytes') else None for r in rows])


def plot_fleet(results_dir: Path, out: Path) -> Path:
    """fleet.png from whichever of fleet.json / fleet_dds.json exist in `results_dir`."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    sources = {name: results_dir / f'{name}.json' for name in ('fleet', 'fleet_dds')}
    found = {name: json.loads(p.read_text()) for name, p in sources.items() if p.exists()}
    if not found:
        raise FileNotFoundError(f'no fleet results in {results_dir} (fleet.json, '
                                f'fleet_dds.json): run `python -m aura_ros bench fleet` first')
    fig, (ax_p99, ax_rss) = plt.subplots(1, 2, figsize=(11, 4))
    lines = []      # (label, result, kind, separate, p99 key, style)
    if 'fleet' in found:
        lines += [('in process, camera', 'fleet', 'camera', False, 'p99_ms', 'C0:'),
                  ('in process, features-in', 'fleet', 'features_in', False, 'p99_ms', 'C1:')]
    if 'fleet_dds' in found:
        lines += [('DDS, one fleet node, camera', 'fleet_dds', 'camera', False,
                   'worst_robot_p99_ms', 'C0-o'),
                  ('DDS, one fleet node, features-in', 'fleet_dds', 'features_in', False,
                   'worst_robot_p99_ms', 'C1-o'),
                  ('DDS, N aura_node processes, camera', 'fleet_dds', 'camera', True,
                   'worst_robot_p99_ms', 'C3--s')]
    for label, name, kind, separate, key, style in lines:
        n, p99, rss = _series(found[name][kind]['rows'], separate, key)
        if not n:
            continue
        ax_p99.plot(n, p99, style, label=label)
        pairs = [(a, b) for a, b in zip(n, rss, strict=True) if b is not None]
        if pairs:
            ax_rss.plot(*zip(*pairs, strict=True), style, label=label)
    rate = next(iter(found.values())).get('rate_hz', 30)
    ax_p99.axhline(1000.0 / rate, color='grey', lw=0.8)
    ax_p99.text(1, 1000.0 / rate * 1.05, f'one frame at {rate:g} Hz', color='grey', fontsize=8)
    for ax, title, unit in ((ax_p99, 'p99 latency, frame stamp -> chunk (worst robot)', 'ms'),
                            (ax_rss, 'resident memory of the serving process(es)', 'MiB')):
        ax.set_xscale('log', base=2)
        ax.set_yscale('log')
        ax.set_xlabel('robots (N)')
        ax.set_ylabel(unit)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    ax_p99.legend(fontsize=7)
    first = next(iter(found.values()))
    machine = first.get('machine', {})
    fig.suptitle(f'aura_node fleet at {rate:g} Hz per robot: {machine.get("cpus", "?")} CPUs, '
                 f'device {first.get("device", "cpu")} ({machine.get("platform", "")})',
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
