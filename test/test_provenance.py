"""One provenance header for every results file (aura_ros/provenance.py)."""

import json
import re
import subprocess

from aura_ros import provenance


def test_header_names_command_commit_machine_and_time():
    header = provenance.header('python -m aura_ros bench x --quick', 'shared with other jobs')
    assert header['command'] == 'python -m aura_ros bench x --quick'
    expected = subprocess.run(['git', 'rev-parse', 'HEAD'], capture_output=True, text=True,
                              cwd=provenance.REPO).stdout.strip()
    assert header['commit'] == expected
    assert re.fullmatch(r'.+, \d+ CPUs, load average [\d.]+ \(shared with other jobs\)',
                        header['machine']), header['machine']
    assert re.fullmatch(r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ', header['time'])


def test_detailed_machine_keeps_the_fields_the_reports_read():
    import torch

    machine = provenance.header('cmd', 'a note', detailed=True)['machine']
    assert {'platform', 'cpus', 'python', 'loadavg'} <= set(machine)
    assert machine['torch'] == torch.__version__ and machine['note'] == 'a note'
    assert provenance.command('python bench/x.py', ['--a', '1']) == 'python bench/x.py --a 1'


def test_write_results_writes_the_json_and_its_table_beside_it(tmp_path):
    from aura_ros.provenance import write_results

    out = write_results(tmp_path / 'new' / 'run.json', {'rows': [1, 2]}, '# table\n')
    assert json.loads(out.read_text()) == {'rows': [1, 2]}
    assert (tmp_path / 'new' / 'run.md').read_text() == '# table\n'
