"""No model, checkpoint, config or state file is loaded through pickle (docs/design.md section 5).

Model files may come from elsewhere; unpickling runs arbitrary code. The loaders are safetensors,
yaml.safe_load / json, and ONNX (protobuf). This scans every module for calls that unpickle.
"""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
UNSAFE = {('torch', 'load'), ('pickle', 'load'), ('pickle', 'loads'), ('dill', 'load'),
          ('joblib', 'load'), ('yaml', 'load'), ('yaml', 'unsafe_load'), ('yaml', 'full_load'),
          ('torch', 'jit'), ('pickle', 'Unpickler')}


def _unsafe_calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in ('pickle', 'dill', 'cPickle', 'joblib'):
                    yield f'{path}:{node.lineno} imports {alias.name}'
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value
        name = owner.id if isinstance(owner, ast.Name) else getattr(owner, 'attr', '')
        if (name, node.func.attr) in UNSAFE:
            yield f'{path}:{node.lineno} calls {name}.{node.func.attr}'
        if (name, node.func.attr) in (('np', 'load'), ('numpy', 'load')):
            pickle_ok = [k for k in node.keywords if k.arg == 'allow_pickle']
            if not pickle_ok or getattr(pickle_ok[0].value, 'value', True) is not False:
                yield f'{path}:{node.lineno} calls np.load without allow_pickle=False'


def test_nothing_unpickles():
    files = [p for folder in ('aura_ros', 'launch', 'bench', 'scripts')
             for p in (REPO / folder).rglob('*.py')]
    assert len(files) > 20
    found = [hit for path in files for hit in _unsafe_calls(path)]
    assert found == []


def test_the_scan_catches_pickle(tmp_path):
    bad = tmp_path / 'bad.py'
    bad.write_text('import torch\nimport numpy as np\nm = torch.load("x.pt")\nnp.load("a.npy")\n')
    assert len(list(_unsafe_calls(bad))) == 2
