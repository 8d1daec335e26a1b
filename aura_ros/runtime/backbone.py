"""The backbone in ONNX Runtime: CUDA when it really works, else CPU, quietly, and reported.

The CUDA provider is asked for only when ONNX Runtime lists it *and* torch sees a CUDA device
(onnxruntime-gpu lists it on machines without a GPU, then fails with a screen of errors); logs
below ERROR are silenced, and the provider actually used is read back from the session. On CUDA
the features are written by IO binding straight into a preallocated torch CUDA tensor, which
the memory engine reads: no host round trip between backbone and memory.
"""

import contextlib
import io

import numpy as np
import torch

CUDA = 'CUDAExecutionProvider'
CPU = 'CPUExecutionProvider'


def cuda_usable() -> bool:
    import onnxruntime as ort

    return CUDA in ort.get_available_providers() and torch.cuda.is_available()


def session_for(path, device: torch.device, threads: int | None = None):
    """(InferenceSession, provider in use) for a model file, on `device` when possible."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    providers = [CPU]
    if device.type == 'cuda' and cuda_usable():
        ort.set_default_logger_severity(3)    # provider loading logs through the global logger
        providers = [(CUDA, {'device_id': device.index or 0}), CPU]
    with contextlib.redirect_stdout(io.StringIO()):   # ORT prints its CUDA->CPU fallback
        session = ort.InferenceSession(str(path), options, providers=providers)
    return session, session.get_providers()[0]


class Backbone:
    """Runs backbone.onnx on the observations of some rows (robots), writing each row's features
    into its row of `features` [rows, d_model] in place.

    `cameras` are the names of the image inputs, in the order `run` receives the images. A graph
    with a free batch dimension runs the rows in one call; one exported with a batch of one runs
    them one after another (same numbers, more calls).
    """

    def __init__(self, path, d_model: int, device: torch.device, threads: int | None = None,
                 cameras: tuple[str, ...] = ('image',), rows: int = 1):
        self.session, self.provider = session_for(path, device, threads)
        self.cameras = tuple(cameras)
        self.device = device
        first = self.session.get_inputs()[0].shape[0]
        self.batched = not isinstance(first, int)            # a named or free batch dimension
        with torch.inference_mode():
            self.features = torch.zeros(rows, d_model, device=device)
        self.binding = self.session.io_binding() if self.provider == CUDA else None

    def run(self, images: list[np.ndarray], joints: np.ndarray,
            rows: list[int] | None = None) -> torch.Tensor:
        """images [k,3,H,W] per camera and joints [k,n] float32 on the host, row i of them the
        observation of robot `rows[i]` (default: rows 0..k-1) -> `features` (the same tensor)."""
        count = joints.shape[0]
        rows = list(range(count)) if rows is None else rows
        if self.batched or count == 1:
            self._run(images, joints, rows)
        else:
            for i, row in enumerate(rows):
                self._run([image[i:i + 1] for image in images], joints[i:i + 1], [row])
        return self.features

    def _run(self, images, joints, rows) -> None:
        start, count = rows[0], len(rows)
        contiguous = rows == list(range(start, start + count))
        if self.binding is not None and contiguous:    # straight into the rows on the device
            for name, image in zip(self.cameras, images, strict=True):
                self.binding.bind_cpu_input(name, np.ascontiguousarray(image))
            self.binding.bind_cpu_input('joints', np.ascontiguousarray(joints))
            target = self.features[start:start + count]
            self.binding.bind_output('features', 'cuda', self.device.index or 0, np.float32,
                                     list(target.shape), target.data_ptr())
            self.session.run_with_iobinding(self.binding)
            return
        feeds = dict(zip(self.cameras, images, strict=True))
        feeds['joints'] = joints
        (out,) = self.session.run(['features'], feeds)
        with torch.inference_mode():
            values = torch.from_numpy(out).to(self.device)
            if contiguous:
                self.features[start:start + count].copy_(values)
            else:
                self.features.index_copy_(0, torch.tensor(rows, device=self.device), values)
