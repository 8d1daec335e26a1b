"""Memory engines: run the AURA step on a state that lives on the device for the whole episode.

Both engines read the features from one preallocated [1, d_model] tensor (the backbone writes
into it) and write action, g, p and surprise into one preallocated device buffer that is copied
to the host in a single transfer; the state is allocated once and never leaves the device.

- `TorchEngine`: `layer.step` under inference_mode, the new state copied into the same W and b
  tensors (in place, so their addresses never change). On CUDA the whole step, copies included,
  can be captured once as a CUDA graph and replayed; the gate threshold is a device tensor, so
  changing it needs no re-capture.
- `OnnxEngine`: the exported step (export.py) in ONNX Runtime with IO binding and two ping-pong
  state buffers: step k reads A and writes B, step k+1 reads B and writes A. The two bindings
  are made once; a step is one `run_with_iobinding`.

Compute, then commit: `compute` runs the step into a pending new state and leaves the state as it
is; `commit` makes the pending state the state (the torch engine copies it in, the ONNX engine
swaps its ping-pong buffers). So the runtime can check everything the step produced (action,
gate, targets) and refuse it with the state untouched; `step` is both at once.

Non-finite guard (both engines): a step whose new state holds NaN or Inf is never committed, so
the state stays the last good one, bit for bit. The check runs on the device as part of the step
(one flag in the output buffer, no extra host sync). On such a step the action is recomputed as a
skip (threshold above 1, so g = 0 and the read comes from the kept state).

Rows (a fleet, one row per robot): the torch engine holds the state of `rows` robots as one
batched tensor allocated once ([rows, d_val, d_key] and [rows, d_val]) and steps any subset of
them in one call (`compute_rows`): the subset's rows are gathered, stepped and scattered back on
commit, so a row not stepped stays bit-identical. The step index `t` is per row (each robot has
its own episode); a layer with time features steps the rows of one `t` together. With one row the
subset is always the whole batch: the state is stepped where it lies, as before. The exported
ONNX step has a free batch dimension, so the ONNX engine serves the same rows the same way.
"""

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from aura_ros.memory import AuraMemLayer

from .export import OUTPUTS, ThresholdGate, step_inputs


@dataclass(frozen=True)
class RowStep:
    """What one row's step gave, before anything is committed."""

    action: np.ndarray             # [chunk, d_action], normalised
    wrote: bool
    p: float
    surprise: float
    discarded: bool                # the new state was not finite: never commit this row


class Engine:
    """What the runtime needs from an engine."""

    name = ''

    def __init__(self, config, features: Tensor):
        self.config = config
        self.features = features                   # [rows, d_model], written by the backbone
        self.device = features.device
        self.rows = features.shape[0]
        self.n_action = config.chunk * config.d_action
        with torch.inference_mode():
            # per row: action (flattened), g, p, surprise, new state finite: one buffer, one
            # device -> host copy per step
            self.out = torch.zeros(self.rows, self.n_action + 4, device=self.device)
            self.host = torch.zeros(self.rows, self.n_action + 4,
                                    pin_memory=self.device.type == 'cuda')
        self.threshold_value = 0.5
        with torch.inference_mode():
            self.t = torch.zeros(1, device=self.device)      # step index, for time features
        self.timed = bool(config.time_features)
        self._pending_rows: list[int] = []

    def _compute(self, idx: Tensor | None, pending: bool = True) -> None:
        """Step the rows `idx` (None: all) into `out`; out[row, -1] = 1 when that row's new
        state is finite. pending: keep the new states for `commit` (False: a skip re-run)."""
        raise NotImplementedError

    def _commit(self, rows: list[int]) -> None:
        """Make the pending state of `rows` (stepped by the last compute) their state."""
        raise NotImplementedError

    def _finite_rows(self, count: int, *tensors: Tensor) -> Tensor:
        """[count] 1.0 where every value of that row of every tensor is finite."""
        flag = torch.ones(count, dtype=torch.bool, device=self.device)
        for tensor in tensors:
            flag = flag & torch.isfinite(tensor.reshape(count, -1)).all(1)
        return flag.to(self.out.dtype)

    @property
    def state(self) -> dict[str, Tensor]:
        raise NotImplementedError

    def step(self, t: int = 0) -> tuple[np.ndarray, bool, float, float, bool]:
        """`compute` and, unless the new state was discarded, `commit` (one-row engines)."""
        result = self.compute(t)
        if not result[4]:
            self.commit()
        return result

    def compute(self, t: int = 0) -> tuple[np.ndarray, bool, float, float, bool]:
        """One step of the only row from `features` into the pending state, not committed:
        (action [chunk, d_action], wrote, p, surprise, discarded).

        `t` is the step's index in the episode (0 first); only layers with time features use
        it, and they get it modulo their period (exact in float32 for any episode length).
        discarded: the new state was not finite; it must not be committed, and the action is
        the one of a skip step (wrote is False).
        """
        if self.rows != 1:
            raise ValueError(f'this engine holds {self.rows} rows: use compute_rows')
        r = self.compute_rows([0], [t])[0]
        return r.action, r.wrote, r.p, r.surprise, r.discarded

    def commit(self, rows: list[int] | None = None) -> None:
        """Make the pending state of `rows` (default: every row the last compute stepped)
        their state; the other rows are not touched."""
        rows = self._pending_rows if rows is None else rows
        if rows:
            with torch.inference_mode():
                self._commit(list(rows))

    def compute_rows(self, rows: list[int], ts: list[int]) -> list[RowStep]:
        """Step the rows `rows` (distinct, each with its episode step index `ts`) into their
        pending states in one batched call (a timed layer: one call per distinct t); nothing
        is committed and no other row is read or written."""
        if len(set(rows)) != len(rows) or not all(0 <= r < self.rows for r in rows):
            raise ValueError(f'rows must be distinct indices in [0, {self.rows}), got {rows}')
        period = self.config.period if self.timed else 0
        groups: dict[int, list[int]] = {}
        for row, t in zip(rows, ts, strict=True):
            groups.setdefault(t % period if period else 0, []).append(row)
        whole = len(rows) == self.rows and len(groups) == 1
        with torch.inference_mode():
            for t, group in groups.items():
                if self.timed:
                    self.t.fill_(float(t))
                self._compute(None if whole else self._index(group))
            self.host.copy_(self.out)              # synchronises with the device
        h = self.host.numpy()
        bad = [row for row in rows if h[row, -1] <= 0]
        first = {row: (float(h[row, -3]), float(h[row, -2])) for row in bad}
        if bad:                                    # re-run those rows as skips: g = 0
            with torch.inference_mode():
                self.threshold.fill_(2.0)          # p > 2 never holds: g = 0, state kept
                try:
                    for t, group in groups.items():
                        redo = [row for row in group if row in first]
                        if redo:
                            if self.timed:
                                self.t.fill_(float(t))
                            self._compute(self._index(redo), pending=False)
                    self.host.copy_(self.out)
                finally:
                    self.threshold.fill_(self.threshold_value)
            h = self.host.numpy()
        self._pending_rows = [row for row in rows if row not in first]
        results = []
        for row in rows:
            action = h[row, :self.n_action].reshape(self.config.chunk,
                                                    self.config.d_action).copy()
            p, surprise = first.get(row, (float(h[row, -3]), float(h[row, -2])))
            results.append(RowStep(action, bool(h[row, -4] > 0) and row not in first, p,
                                   surprise, row in first))
        return results

    def _index(self, rows: list[int]) -> Tensor:
        return torch.tensor(rows, dtype=torch.long, device=self.device)

    def _sync(self) -> None:
        if self.device.type == 'cuda':
            torch.cuda.current_stream(self.device).synchronize()

    def reset(self, rows: list[int] | None = None) -> None:
        """Zero the state of `rows` (default: all)."""
        with torch.inference_mode():
            for tensor in self.state.values():
                if rows is None:
                    tensor.zero_()
                else:
                    tensor[self._index(rows)] = 0
        self._sync()

    def load_state(self, state: dict[str, np.ndarray], row: int | None = None) -> None:
        """The whole state, or one row of it ([1, ...] arrays) when `row` is given."""
        with torch.inference_mode():
            for name, tensor in self.state.items():
                value = torch.from_numpy(np.ascontiguousarray(state[name]))
                (tensor if row is None else tensor[row:row + 1]).copy_(value)
        self._sync()

    def state_dict(self, row: int | None = None) -> dict[str, np.ndarray]:
        """Host copies of the whole state, or of one row ([1, ...]) when `row` is given."""
        return {k: (v if row is None else v[row:row + 1]).detach().cpu().numpy().copy()
                for k, v in self.state.items()}

    def state_bytes(self) -> int:
        """Bytes of the live state (W and b) of all rows, what `memory_bytes(rows)` predicts."""
        return sum(t.numel() * t.element_size() for t in self.state.values())

    def set_threshold(self, value: float) -> None:
        """Write when p > value from the next step on (a device tensor: no re-capture)."""
        self.threshold_value = float(value)
        with torch.inference_mode():
            self.threshold.fill_(self.threshold_value)
        self._sync()


class TorchEngine(Engine):
    """Eager torch step, in place on persistent state tensors; optional CUDA graph replay.

    Runs an AuraMemLayer or any fixed-size memory model of aura_ros.memory.baselines with the
    same `step(z_t, state, t)` (GRU: state {'h'}, no memory: {}), so the baselines can run in
    aura_node for closed-loop comparisons; those have no gate (their g is constant) and ignore
    the threshold. The CUDA graph is of the whole batch (every row stepped).
    """

    name = 'torch'

    def __init__(self, layer: torch.nn.Module, features: Tensor, threshold: float,
                 cuda_graph: bool = False):
        super().__init__(layer.config, features)
        self.layer = layer.to(self.device).eval()
        with torch.inference_mode():
            self.threshold = torch.tensor([float(threshold)], device=self.device)
            self._state = layer.init_state(self.rows, self.device)
            self._pending = {k: torch.zeros_like(v) for k, v in self._state.items()}
        self.threshold_value = float(threshold)
        # the threshold is a tensor the gate reads each step (set_threshold, CUDA graph alike)
        self.gate = {'gate': ThresholdGate(self.threshold)} if isinstance(layer, AuraMemLayer) \
            else {}
        self.graph = None
        if cuda_graph:
            if self.device.type != 'cuda':
                raise ValueError('cuda_graph=True needs the state on a CUDA device')
            self._capture()

    @property
    def state(self) -> dict[str, Tensor]:
        return self._state

    def _eager(self, idx: Tensor | None = None, pending: bool = True) -> None:
        if idx is None:                            # every row, where it lies: capturable
            z, state = self.features, self._state
        else:
            z = self.features.index_select(0, idx)
            state = {k: v.index_select(0, idx) for k, v in self._state.items()}
        count = z.shape[0]
        out = self.layer.step(z, state, self.t, **self.gate)
        new = out['state']
        finite = self._finite_rows(count, *new.values())
        if pending:
            for name, tensor in self._pending.items():
                if idx is None:                    # same addresses every step: capturable
                    tensor.copy_(new[name])
                else:
                    tensor.index_copy_(0, idx, new[name])
        row = torch.cat([out['action'].reshape(count, -1),
                         *(out[k].reshape(-1, 1).expand(count, 1) for k in ('g', 'p', 'surprise')),
                         finite[:, None]], 1)
        if idx is None:
            self.out.copy_(row)
        else:
            self.out.index_copy_(0, idx, row)

    def _capture(self) -> None:
        """Record `_eager` of every row once as a CUDA graph (warm-up on a side stream, state
        restored)."""
        with torch.inference_mode():
            saved = {k: v.clone() for k, v in self._state.items()}
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(3):
                    self._eager()
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._eager()
            for k, v in self._state.items():
                v.copy_(saved[k])
            self.out.zero_()
        self._sync()
        self.graph = graph

    def _compute(self, idx: Tensor | None, pending: bool = True) -> None:
        if self.graph is not None and idx is None and pending:
            self.graph.replay()
        else:
            self._eager(idx, pending)

    def _commit(self, rows: list[int]) -> None:
        if len(rows) == self.rows:
            for name, tensor in self._state.items():
                tensor.copy_(self._pending[name])
        else:
            idx = self._index(rows)
            for name, tensor in self._state.items():
                tensor.index_copy_(0, idx, self._pending[name].index_select(0, idx))


class OnnxEngine(Engine):
    """The exported step in ONNX Runtime, state in two ping-pong buffers bound once.

    On CUDA (CUDA provider in use) every input and output is bound to a torch CUDA tensor by
    pointer: features, state and results stay on the device. Otherwise the same buffers are
    CPU tensors, bound by pointer to preallocated host memory, so nothing is allocated per step.
    If the runtime's device is CUDA but ONNX Runtime cannot use it, the engine keeps its state on
    the CPU and stages the features through one host copy (reported by `staged`).

    Rows: the graph's batch is free (export.py), so one engine serves a fleet. Stepping every
    row runs on the state where it lies (ping-pong, as for one row); a subset of k rows is
    gathered into staging buffers allocated once (bound per k, on first use), stepped, and its
    new state scattered into the pending buffer, so the rows not stepped are never written.
    Committing every row swaps the buffers; committing some copies theirs in.
    """

    name = 'onnx'

    def __init__(self, path, config, features: Tensor, threshold: float,
                 threads: int | None = None):
        from .backbone import session_for

        self.path = path
        self.session, self.provider = session_for(path, features.device, threads)
        on_cuda = self.provider == 'CUDAExecutionProvider'
        self.staged = features.device.type == 'cuda' and not on_cuda
        source = features
        if self.staged:
            features = torch.zeros(features.shape)
        super().__init__(config, features)
        self.source = source
        self._check_signature()
        c, dev, rows = config, self.device, self.rows
        with torch.inference_mode():
            self.threshold = torch.tensor([float(threshold)], device=dev)
            self.threshold_value = float(threshold)
            self.buffers = [{'W': torch.zeros(rows, c.d_val, c.d_key, device=dev),
                             'b': torch.zeros(rows, c.d_val, device=dev)} for _ in range(2)]
            # the step's own outputs (action, g, p, surprise), gathered into `out` after it
            self.results = {'action': torch.zeros(rows, c.chunk, c.d_action, device=dev),
                            **{k: torch.zeros(rows, device=dev) for k in ('g', 'p', 'surprise')}}
            # a subset of rows: its inputs gathered here, its new state written here
            self.gathered = {'z': torch.zeros_like(self.features),
                             **{k: torch.zeros_like(v) for k, v in self.buffers[0].items()}}
            self.stepped = {k: torch.zeros_like(v) for k, v in self.buffers[0].items()}
        self._kind = ('cuda', dev.index or 0) if on_cuda else ('cpu', 0)
        # every row, state where it lies: step k reads buffers[k % 2] and writes the other
        self.bindings = [self._binding(self.features, src, dst, rows)
                         for src, dst in ((self.buffers[0], self.buffers[1]),
                                          (self.buffers[1], self.buffers[0]))]
        self.subset_bindings: dict = {}                         # k rows -> binding
        self.current = 0                                        # buffers[current] is the state

    def _binding(self, z: Tensor, src: dict, dst: dict, count: int):
        """One io binding of the first `count` rows of these buffers (bound by pointer)."""
        binding = self.session.io_binding()
        kind, index = self._kind

        def bind(name, tensor, output=False, rows=True):
            method = binding.bind_output if output else binding.bind_input
            shape = [count, *tensor.shape[1:]] if rows else list(tensor.shape)
            method(name, kind, index, np.float32, shape, tensor.data_ptr())

        bind('z', z)
        bind('W', src['W'])
        bind('b', src['b'])
        bind('threshold', self.threshold, rows=False)      # [1], shared by the rows
        if self.timed:
            bind('t', self.t, rows=False)
        bind('W_new', dst['W'], True)
        bind('b_new', dst['b'], True)
        for name, tensor in self.results.items():
            bind(name, tensor, True)
        return binding

    def _check_signature(self) -> None:
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        expected = step_inputs(self.config)
        if tuple(inputs) != expected or tuple(outputs) != OUTPUTS:
            raise ValueError(f'memory step graph has inputs {inputs} and outputs {outputs}, '
                             f'expected {list(expected)} -> {list(OUTPUTS)}')
        batch = self.session.get_inputs()[0].shape[0]
        if self.rows > 1 and batch == 1:
            raise ValueError(f'{self.path}: this memory step was exported with a batch of one, '
                             f'not for {self.rows} robots: export it again '
                             '(python -m aura_ros export --model-dir DIR)')

    @property
    def state(self) -> dict[str, Tensor]:
        return self.buffers[self.current]

    def _compute(self, idx: Tensor | None, pending: bool = True) -> None:
        if self.staged:
            self.features.copy_(self.source)
        if idx is None:
            self.session.run_with_iobinding(self.bindings[self.current])
            new, count = self.buffers[self.current ^ 1], self.rows
        else:
            count = idx.shape[0]
            state = self.state
            self.gathered['z'][:count] = self.features.index_select(0, idx)
            for name in ('W', 'b'):
                self.gathered[name][:count] = state[name].index_select(0, idx)
            if count not in self.subset_bindings:
                self.subset_bindings[count] = self._binding(self.gathered['z'], self.gathered,
                                                            self.stepped, count)
            self.session.run_with_iobinding(self.subset_bindings[count])
            new = {k: v[:count] for k, v in self.stepped.items()}
            if pending:
                for name, tensor in self.buffers[self.current ^ 1].items():
                    tensor.index_copy_(0, idx, new[name])
        r = self.results
        row = torch.cat([r['action'][:count].reshape(count, -1),
                         *(r[k][:count, None] for k in ('g', 'p', 'surprise')),
                         self._finite_rows(count, new['W'], new['b'])[:, None]], 1)
        if idx is None:
            self.out.copy_(row)
        else:
            self.out.index_copy_(0, idx, row)

    def _commit(self, rows: list[int]) -> None:
        # a non-finite new state is never committed: its row is not in `rows`
        if len(rows) == self.rows:
            self.current ^= 1
            return
        idx = self._index(rows)
        for name, tensor in self.state.items():
            tensor.index_copy_(0, idx, self.buffers[self.current ^ 1][name].index_select(0, idx))

    def allocated_bytes(self) -> int:
        """Both ping-pong buffers: twice `state_bytes()`."""
        return sum(t.numel() * t.element_size() for b in self.buffers for t in b.values())
