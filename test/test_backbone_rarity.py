"""What the backbone over-samples without hints: rare pixels, or rare colours."""

import numpy as np
import pytest
import torch

from aura_ros.runtime.model_dir import IMAGE_MEAN, IMAGE_STD
from aura_ros.training.trainer import TrainerConfig, TrainerError
from aura_ros.training.trainer.backbone import colour_rarity, pixel_rarity


def _scene(n: int = 200, size: int = 24):
    """Grey frames with a grey-blue arm block at a usual place; 10 frames show the arm pushed
    to a place it is never seen, 10 frames a small magenta lamp. Normalised as thumbnails."""
    rgb = torch.full((n, 1, 3, size, size), 0.5)
    rgb[:, :, :, 4:10, 4:10] = torch.tensor([0.3, 0.3, 0.6]).view(3, 1, 1)      # the arm
    pushed, lamp = np.arange(20, 30), np.arange(100, 110)
    for i in pushed:
        rgb[i, :, :, 4:10, 4:10] = 0.5
        rgb[i, :, :, 14:20, 14:20] = torch.tensor([0.3, 0.3, 0.6]).view(3, 1, 1)
    rgb[lamp, :, :, 2:4, 18:20] = torch.tensor([0.9, 0.1, 0.9]).view(3, 1, 1)
    mean = torch.tensor(IMAGE_MEAN).view(1, 1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(1, 1, 3, 1, 1)
    return (rgb - mean) / std, set(pushed), set(lamp)


def test_colour_rarity_picks_the_lamp_and_not_the_pushed_arm():
    thumbs, pushed, lamp = _scene()
    top = set(np.argsort(-colour_rarity(thumbs, pixels=4))[:10].tolist())
    assert top == lamp
    by_pixel = set(np.argsort(-pixel_rarity(thumbs))[:20].tolist())
    assert pushed <= by_pixel          # the pixel rule ranks the pushed arm as rare too


def test_rarity_is_checked_by_name():
    assert TrainerConfig(rarity='colour').rarity == 'colour'
    with pytest.raises(TrainerError, match="rarity must be 'pixel' or 'colour'"):
        TrainerConfig(rarity='hue')
