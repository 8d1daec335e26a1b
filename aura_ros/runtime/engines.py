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
"""

import numpy as np
import torch
from torch import Tensor

from aura_ros.memory import AuraMemLayer

from .export import OUTPUTS, ThresholdGate, step_inputs


class Engine:
    """What the runtime needs from an engine."""

    name = ''

    def __init__(self, config, features: Tensor):
        self.config = config
        self.features = features                   # [1, d_model], written by the backbone
        self.device = features.device
        self.n_action = config.chunk * config.d_action
        with torch.inference_mode():
            # action (flattened), g, p, surprise, new state finite: one buffer, one device ->
            # host copy per step
            self.out = torch.zeros(self.n_action + 4, device=self.device)
            self.host = torch.zeros(self.n_action + 4,
                                    pin_memory=self.device.type == 'cuda')
        self.threshold_value = 0.5
        with torch.inference_mode():
            self.t = torch.zeros(1, device=self.device)      # step index, for time features
        self.timed = bool(config.time_features)

    def _compute(self) -> None:
        """Run the step into `out`; out[-1] = 1 when the new state is finite (and kept)."""
        raise NotImplementedError

    def commit(self) -> None:
        """Make the pending state of the last `compute` the state (ping-pong engines swap)."""
        raise NotImplementedError

    def _finite_flag(self, *tensors: Tensor) -> Tensor:
        flag = torch.ones(1, dtype=torch.bool, device=self.device)
        for tensor in tensors:
            flag = flag & torch.isfinite(tensor).all()
        return flag.reshape(1)

    @property
    def state(self) -> dict[str, Tensor]:
        raise NotImplementedError

    def step(self, t: int = 0) -> tuple[np.ndarray, bool, float, float, bool]:
        """`compute` and, unless the new state was discarded, `commit`."""
        result = self.compute(t)
        if not result[4]:
            self.commit()
        return result

    def compute(self, t: int = 0) -> tuple[np.ndarray, bool, float, float, bool]:
        """One step from `features` into the pending state, not committed:
        (action [chunk, d_action], wrote, p, surprise, discarded).

        `t` is the step's index in the episode (0 first); only layers with time features use
        it, and they get it modulo their period (exact in float32 for any episode length).
        discarded: the new state was not finite; it must not be committed, and the action is
        the one of a skip step (wrote is False).
        """
        with torch.inference_mode():
            if self.timed:
                self.t.fill_(float(t % self.config.period))
            self._compute()
            self.host.copy_(self.out)              # synchronises with the device
        h = self.host.numpy()
        p, surprise = float(h[-3]), float(h[-2])
        if h[-1] > 0:
            discarded = False
        else:
            discarded = True
            with torch.inference_mode():
                self.threshold.fill_(2.0)          # p > 2 never holds: g = 0, state kept
                try:
                    self._compute()
                    self.host.copy_(self.out)
                finally:
                    self.threshold.fill_(self.threshold_value)
            h = self.host.numpy()
        action = h[:self.n_action].reshape(self.config.chunk, self.config.d_action).copy()
        return action, bool(h[-4] > 0) and not discarded, p, surprise, discarded

    def _sync(self) -> None:
        if self.device.type == 'cuda':
            torch.cuda.current_stream(self.device).synchronize()

    def reset(self) -> None:
        with torch.inference_mode():
            for tensor in self.state.values():
                tensor.zero_()
        self._sync()

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        with torch.inference_mode():
            for name, tensor in self.state.items():
                tensor.copy_(torch.from_numpy(np.ascontiguousarray(state[name])))
        self._sync()

    def state_dict(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy().copy() for k, v in self.state.items()}

    def state_bytes(self) -> int:
        """Bytes of the live state (W and b), what `MemoryConfig.memory_bytes(1)` predicts."""
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
    the threshold.
    """

    name = 'torch'

    def __init__(self, layer: torch.nn.Module, features: Tensor, threshold: float,
                 cuda_graph: bool = False):
        super().__init__(layer.config, features)
        self.layer = layer.to(self.device).eval()
        with torch.inference_mode():
            self.threshold = torch.tensor([float(threshold)], device=self.device)
            self._state = layer.init_state(1, self.device)
            self._pending = {k: torch.zeros_like(v) for k, v in self._state.items()}
        self.threshold_value = float(threshold)
        if isinstance(layer, AuraMemLayer):
            layer.gate_policy = ThresholdGate(self.threshold)
        self.graph = None
        if cuda_graph:
            if self.device.type != 'cuda':
                raise ValueError('cuda_graph=True needs the state on a CUDA device')
            self._capture()

    @property
    def state(self) -> dict[str, Tensor]:
        return self._state

    def _eager(self) -> None:
        out = self.layer.step(self.features, self._state, self.t)
        new = out['state']
        finite = self._finite_flag(*new.values())
        for name, tensor in self._pending.items():  # same addresses every step: capturable
            tensor.copy_(new[name])
        self.out.copy_(torch.cat([out['action'].reshape(-1), out['g'].reshape(1),
                                  out['p'].reshape(1), out['surprise'].reshape(1),
                                  finite.to(self.out.dtype)]))

    def _capture(self) -> None:
        """Record `_eager` once as a CUDA graph (warm-up on a side stream, state restored)."""
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

    def _compute(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        else:
            self._eager()

    def commit(self) -> None:
        with torch.inference_mode():
            for name, tensor in self._state.items():
                tensor.copy_(self._pending[name])


class OnnxEngine(Engine):
    """The exported step in ONNX Runtime, state in two ping-pong buffers bound once.

    On CUDA (CUDA provider in use) every input and output is bound to a torch CUDA tensor by
    pointer: features, state and results stay on the device. Otherwise the same buffers are
    CPU tensors, bound by pointer to preallocated host memory, so nothing is allocated per step.
    If the runtime's device is CUDA but ONNX Runtime cannot use it, the engine keeps its state on
    the CPU and stages the features through one host copy (reported by `staged`).
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
        c, dev = config, self.device
        with torch.inference_mode():
            self.threshold = torch.tensor([float(threshold)], device=dev)
            self.threshold_value = float(threshold)
            self.buffers = [{'W': torch.zeros(1, c.d_val, c.d_key, device=dev),
                             'b': torch.zeros(1, c.d_val, device=dev)} for _ in range(2)]
        kind, index = ('cuda', dev.index or 0) if on_cuda else ('cpu', 0)

        def bind(binding, name, tensor, output=False, shape=None):
            method = binding.bind_output if output else binding.bind_input
            method(name, kind, index, np.float32, list(shape or tensor.shape), tensor.data_ptr())

        self.bindings = []
        for src, dst in ((self.buffers[0], self.buffers[1]), (self.buffers[1], self.buffers[0])):
            binding = self.session.io_binding()
            bind(binding, 'z', self.features)
            bind(binding, 'W', src['W'])
            bind(binding, 'b', src['b'])
            bind(binding, 'threshold', self.threshold)
            if self.timed:
                bind(binding, 't', self.t)
            bind(binding, 'W_new', dst['W'], True)
            bind(binding, 'b_new', dst['b'], True)
            # results straight into the engine's output buffer: action, then g, p, surprise
            bind(binding, 'action', self.out, True, [1, c.chunk, c.d_action])
            for i, name in enumerate(('g', 'p', 'surprise')):
                bind(binding, name, self.out[self.n_action + i:], True, [1])
            self.bindings.append(binding)
        self.current = 0                                        # buffers[current] is the state

    def _check_signature(self) -> None:
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        expected = step_inputs(self.config)
        if tuple(inputs) != expected or tuple(outputs) != OUTPUTS:
            raise ValueError(f'memory step graph has inputs {inputs} and outputs {outputs}, '
                             f'expected {list(expected)} -> {list(OUTPUTS)}')

    @property
    def state(self) -> dict[str, Tensor]:
        return self.buffers[self.current]

    def _compute(self) -> None:
        if self.staged:
            self.features.copy_(self.source)
        self.session.run_with_iobinding(self.bindings[self.current])
        new = self.buffers[self.current ^ 1]
        self.out[-1:].copy_(self._finite_flag(new['W'], new['b']))

    def commit(self) -> None:
        self.current ^= 1                          # a non-finite new buffer is never swapped in

    def reset(self) -> None:
        with torch.inference_mode():
            for buffer in self.buffers:
                for tensor in buffer.values():
                    tensor.zero_()
        self._sync()

    def allocated_bytes(self) -> int:
        """Both ping-pong buffers: twice `state_bytes()`."""
        return sum(t.numel() * t.element_size() for b in self.buffers for t in b.values())
