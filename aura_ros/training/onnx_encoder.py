"""A user's ONNX image encoder as the frozen backbone of a trained model (`backbone: onnx`).

The encoder maps one normalised image [N, 3, H, W] to features. The model directory's
backbone.onnx is built from it with ONNX's own graph tools: one copy of the encoder per camera
(input renamed to the camera's name), each output flattened, concatenated with the normalised
'joints' input into 'features' [N, cameras * d_encoder + n_joints]. The trainer computes the
training features with that same composed graph in ONNX Runtime, so the memory trains on
exactly the numbers the robot's runtime will produce. The encoder's own normalisation
(`encoder_mean`, `encoder_std`, on pixel / 255) goes into the camera specs of model.yaml.
"""

from pathlib import Path

import numpy as np
import torch

from aura_ros.runtime.model_dir import JOINTS_INPUT, CameraSpec
from aura_ros.runtime.preprocess import normalise


class EncoderError(ValueError):
    """The ONNX encoder cannot serve as the backbone; the message says why."""


def _dims(value_info) -> list:
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField('dim_value') else None for d in shape.dim]


def compose(encoder_path: str | Path, cameras: tuple[str, ...], n_joints: int,
            input_name: str = '', output_name: str = ''):
    """The model directory's backbone graph (an onnx.ModelProto) and the encoder's width."""
    import onnx
    from onnx import TensorProto, helper
    from onnx import compose as oc

    path = Path(encoder_path)
    if not path.is_file():
        raise EncoderError(f'{path}: no such ONNX encoder file')
    try:
        model = onnx.load(str(path))
    except Exception as err:  # onnx raises DecodeError and friends
        raise EncoderError(f'{path}: not a readable ONNX model ({err})') from err
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    outputs = list(model.graph.output)
    names_in, names_out = [i.name for i in inputs], [o.name for o in outputs]
    input_name = input_name or (names_in[0] if names_in else '')
    output_name = output_name or (names_out[0] if names_out else '')
    if input_name not in names_in:
        raise EncoderError(f'{path}: no input {input_name!r}; inputs: {names_in}')
    if len(inputs) != 1:
        raise EncoderError(f'{path}: the encoder must take one image input, it takes {names_in}')
    if output_name not in names_out:
        raise EncoderError(f'{path}: no output {output_name!r}; outputs: {names_out}')
    dims = _dims(inputs[0])
    if len(dims) != 4 or dims[1] not in (3, None):
        raise EncoderError(f'{path}: input {input_name!r} has shape {dims}, expected '
                           '[batch, 3, height, width]')
    parts = []
    for cam in cameras:
        prefixed = oc.add_prefix(model, f'{cam}__')
        graph = prefixed.graph
        rename = {f'{cam}__{input_name}': cam}
        for node in graph.node:
            node.input[:] = [rename.get(n, n) for n in node.input]
        parts.append(graph)
    nodes, inits, flat = [], [], []
    for cam, graph in zip(cameras, parts, strict=True):
        nodes += list(graph.node)
        inits += list(graph.initializer)
        flat_name = f'{cam}__flat'
        nodes.append(helper.make_node('Flatten', [f'{cam}__{output_name}'], [flat_name], axis=1))
        flat.append(flat_name)
    nodes.append(helper.make_node('Concat', [*flat, JOINTS_INPUT], ['features'], axis=1))
    graph_inputs = [helper.make_tensor_value_info(cam, TensorProto.FLOAT,
                                                  ['batch', 3, dims[2] or 'height',
                                                   dims[3] or 'width']) for cam in cameras]
    graph_inputs.append(helper.make_tensor_value_info(JOINTS_INPUT, TensorProto.FLOAT,
                                                      ['batch', n_joints]))
    out = helper.make_tensor_value_info('features', TensorProto.FLOAT, ['batch', None])
    composed = helper.make_model(helper.make_graph(nodes, 'aura_backbone', graph_inputs, [out],
                                                   initializer=inits),
                                 opset_imports=model.opset_import, ir_version=model.ir_version)
    try:
        onnx.checker.check_model(composed)
    except onnx.checker.ValidationError as err:
        raise EncoderError(f'{path}: the composed backbone is not valid ONNX ({err})') from err
    return composed, (dims[2], dims[3])


class OnnxEncoder:
    """The composed backbone: encode() for the trainer, export() for the model directory."""

    def __init__(self, cfg, demos):
        import onnxruntime as ort

        self.cfg, self.cameras = cfg, demos.cameras
        self.model, size = compose(cfg.encoder_onnx, demos.cameras, len(demos.joint_names),
                                   cfg.encoder_input, cfg.encoder_output)
        sizes = {demos.size_of(c) for c in demos.cameras}
        if len(sizes) > 1:
            raise EncoderError(f'{cfg.encoder_onnx}: one encoder takes one image size, but the '
                               f'cameras differ ({", ".join(f"{h}x{w}" for h, w in sorted(sizes))}'
                               '): set data: image_size: [height, width]')
        H, W = demos.image_size
        if (size[0] is not None and size[0] != H) or (size[1] is not None and size[1] != W):
            raise EncoderError(f'{cfg.encoder_onnx}: takes {size[0]}x{size[1]} images but the '
                               f'data is {H}x{W}: set data: image_size: [{size[0]}, {size[1]}]')
        self.height, self.width = H, W
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(self.model.SerializeToString(), options,
                                            providers=['CPUExecutionProvider'])
        probe = self.encode([np.zeros((1, H, W, 3), np.uint8) for _ in self.cameras],
                            torch.zeros(1, len(demos.joint_names)))
        self.d_model = int(probe.shape[1])

    def encode(self, images: list, joints: torch.Tensor) -> torch.Tensor:
        """uint8 [N, H, W, 3] per camera + normalised joints -> features [N, d_model]."""
        feed = {cam: np.ascontiguousarray(normalise(img, self.cfg.encoder_mean,
                                                    self.cfg.encoder_std))
                for cam, img in zip(self.cameras, images, strict=True)}
        feed[JOINTS_INPUT] = joints.numpy().astype(np.float32)
        (features,) = self.session.run(['features'], feed)
        return torch.from_numpy(features)

    def cameras_spec(self) -> list:
        return [CameraSpec(name=c, width=self.width, height=self.height,
                           mean=tuple(self.cfg.encoder_mean), std=tuple(self.cfg.encoder_std))
                for c in self.cameras]

    def export(self, path: Path, spec) -> Path:
        """Write the composed backbone with the output width fixed to d_model."""
        import onnx

        dim = self.model.graph.output[0].type.tensor_type.shape.dim[1]
        dim.ClearField('dim_param')
        dim.dim_value = self.d_model
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(self.model, str(path))
        return path
