"""SmallCNN: the default image + joints backbone, small enough to train on a CPU, exports to ONNX.

Three strided convolutions, then two poolings of the last feature map: a global average (what is
in view) and a spatial soft-argmax (where it is: the expected x, y of each keypoint channel, as in
Levine et al.'s deep spatial autoencoders). A robot arm task needs positions, which plain average
pooling throws away; the soft-argmax keeps them for any input size with a fixed number of weights.
The joints go through their own small layer and are fused with the image features by an MLP.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aura_ros.checks import is_int, need


def _conv_out(size: int) -> int:
    """Output size of a 3x3, stride 2, padding 1 convolution."""
    return (size + 1) // 2


class SmallCNN(nn.Module):
    """forward(image [B,3,H,W] normalised, joints [B,n_joints]) -> features [B, d_model]."""

    def __init__(self, height: int, width: int, n_joints: int, d_model: int,
                 channels: tuple[int, int, int] = (16, 32, 32), keypoints: int = 16,
                 joint_width: int = 32, hidden: int = 256):
        super().__init__()
        for name, value in (('height', height), ('width', width), ('n_joints', n_joints),
                            ('d_model', d_model)):
            need(is_int(value, 1), ValueError,
                 f'SmallCNN.{name} must be a positive integer, got {value!r}')
        self.height, self.width, self.n_joints, self.d_model = height, width, n_joints, d_model
        c1, c2, c3 = channels
        self.convs = nn.Sequential(
            nn.Conv2d(3, c1, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(c2, c3, 3, stride=2, padding=1), nn.ReLU(),
        )
        self.keypoints = nn.Conv2d(c3, keypoints, 1)
        h, w = height, width
        for _ in range(3):
            h, w = _conv_out(h), _conv_out(w)
        # Pixel-centre coordinates in [-1, 1] of the last feature map, flattened row-major.
        ys = (torch.arange(h, dtype=torch.float32) + 0.5) / h * 2 - 1
        xs = (torch.arange(w, dtype=torch.float32) + 0.5) / w * 2 - 1
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing='ij')
        self.register_buffer('coords', torch.stack([grid_x.flatten(), grid_y.flatten()], 1),
                             persistent=False)   # [h*w, 2]: derived from the sizes, not weights
        self.joints_in = nn.Linear(n_joints, joint_width)
        self.fuse = nn.Sequential(
            nn.Linear(c3 + 2 * keypoints + joint_width, hidden), nn.GELU(),
            nn.Linear(hidden, d_model),
        )

    def forward(self, image: Tensor, joints: Tensor) -> Tensor:
        fmap = self.convs(image)                                    # [B, c3, h, w]
        pooled = fmap.mean(dim=(2, 3))                              # [B, c3]
        attention = F.softmax(self.keypoints(fmap).flatten(2), dim=-1)   # [B, K, h*w]
        where = torch.matmul(attention, self.coords).flatten(1)    # [B, 2K]: (x, y) per keypoint
        j = F.relu(self.joints_in(joints))
        return self.fuse(torch.cat([pooled, where, j], dim=1))


class CameraBackbone(nn.Module):
    """forward(*images, joints) -> features: one SmallCNN per camera, fused by a linear layer
    when there are several (a single camera's SmallCNN is used as it is)."""

    def __init__(self, cameras: tuple[str, ...], sizes: list, n_joints: int, d_model: int,
                 channels: tuple[int, int, int]):
        super().__init__()
        self.cameras = cameras
        self.cnns = nn.ModuleList(SmallCNN(h, w, n_joints, d_model, channels=channels)
                                  for h, w in sizes)      # (height, width) per camera
        self.fuse = nn.Linear(d_model * len(cameras), d_model) if len(cameras) > 1 else None

    def forward(self, *inputs):
        *images, joints = inputs
        parts = [cnn(img, joints) for cnn, img in zip(self.cnns, images, strict=True)]
        return parts[0] if self.fuse is None else self.fuse(torch.cat(parts, -1))
