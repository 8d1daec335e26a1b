"""Where a result came from: the command, commit, machine and time every results file carries.

One helper for every writer of docs/results (benchmarks, evaluations, soak, fuzz), so a number
can always be traced to the command that made it, on which machine, at which commit. Standard
library only (torch's version and threads when torch is already loaded), so it sits on the
ground floor and any layer may use it.
"""

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

REPO = Path(__file__).resolve().parents[1]


def commit(root: Optional[Path] = None) -> str:
    """The checked-out commit of the repository (its hash), or '' outside a git checkout."""
    try:
        return subprocess.run(['git', 'rev-parse', 'HEAD'], capture_output=True, text=True,
                              check=True, cwd=root or REPO).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ''


def command(program: str, argv: Optional[Sequence[str]] = None) -> str:
    """The command line that reruns this: `program` and the arguments (sys.argv[1:] if None)."""
    return ' '.join([program, *(sys.argv[1:] if argv is None else argv)])


def machine() -> dict:
    """The machine as fields: platform, processor, CPUs, load average, Python, and torch's
    version and thread count when torch is loaded."""
    info = {'platform': platform.platform(), 'processor': platform.processor() or 'unknown',
            'cpus': os.cpu_count(), 'loadavg': [round(x, 2) for x in os.getloadavg()],
            'python': platform.python_version()}
    torch = sys.modules.get('torch')
    if torch is not None:
        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    return info


def describe(note: str = '') -> str:
    """The machine in one line for a report: architecture, CPUs, load average now, and a note
    (e.g. 'shared with other jobs', the renderer)."""
    line = f'{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}'
    return f'{line} ({note})' if note else line


def utc_now() -> str:
    """The time now, UTC, ISO 8601 to the second."""
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())


def header(command_line: str, note: str = '', detailed: bool = False) -> dict:
    """The provenance fields of a results file: command, commit, machine (one line with `note`,
    or the fields of `machine()` when `detailed`) and time."""
    fields = {**machine(), **({'note': note} if note else {})} if detailed else describe(note)
    return {'command': command_line, 'commit': commit(), 'machine': fields, 'time': utc_now()}


def write_results(out, result: dict, markdown: str) -> Path:
    """Write a results file and its table beside it: `out` (JSON) and `out` with `.md`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + '\n')
    out.with_suffix('.md').write_text(markdown)
    return out
