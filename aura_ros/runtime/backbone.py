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
    """Runs backbone.onnx on one observation, writing the features into `features` in place.

    `cameras` are the names of the image inputs, in the order `run` receives the images.
    """

    def __init__(self, path, d_model: int, device: torch.device, threads: int | None = None,
                 cameras: tuple[str, ...] = ('image',)):
        self.session, self.provider = session_for(path, device, threads)
        self.cameras = tuple(cameras)
        with torch.inference_mode():
            self.features = torch.zeros(1, d_model, device=device)
        self.binding = None
        if self.provider == CUDA:
            self.binding = self.session.io_binding()
            self.binding.bind_output('features', 'cuda', device.index or 0, np.float32,
                                     [1, d_model], self.features.data_ptr())

    def run(self, images: list[np.ndarray], joints: np.ndarray) -> torch.Tensor:
        """images [1,3,H,W] per camera, joints [1,n] float32 on the host -> `features` (the same
        tensor)."""
        if self.binding is not None:
            for name, image in zip(self.cameras, images, strict=True):
                self.binding.bind_cpu_input(name, image)
            self.binding.bind_cpu_input('joints', joints)
            self.session.run_with_iobinding(self.binding)
        else:
            feeds = dict(zip(self.cameras, images, strict=True))
            feeds['joints'] = joints
            (out,) = self.session.run(['features'], feeds)
            with torch.inference_mode():
                self.features.copy_(torch.from_numpy(out))
        return self.features
