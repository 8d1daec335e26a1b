"""`python -m aura_ros init-model` writes every file of the model directory with one mode."""

import os
import stat

from aura_ros.cli import main


def test_init_model_files_share_one_mode(tmp_path, capsys):
    """#15 row 22: memory.safetensors came out 0600 while its siblings were 0644."""
    out = tmp_path / 'model'
    old = os.umask(0o022)
    try:
        assert main(['init-model', '--out', str(out), '--image-size', '16', '--d-model', '16']) \
            == 0
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert set(modes.values()) == {0o644}, {k: oct(v) for k, v in modes.items()}
