"""Image transforms: the seed's training augmentation and a plain evaluation transform."""

from __future__ import annotations

from torchvision.transforms import v2 as T
import torch


def build_transform(image_size: int = 224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                    train: bool = False, hflip: float = 0.5, rotation: float = 10.0) -> T.Compose:
    """Resize to a square, then (train only) flip and rotate, then tensor and normalise.

    The resize works on the PIL image (Pillow's antialiased bilinear filter), so a runtime
    without torch (`captag.deploy`) reproduces the evaluation transform exactly."""
    steps = [T.Resize((image_size, image_size), interpolation=T.InterpolationMode.BILINEAR),
             T.ToImage()]
    if train and hflip > 0:
        steps.append(T.RandomHorizontalFlip(hflip))
    if train and rotation > 0:
        steps.append(T.RandomRotation(rotation))
    steps += [T.ToDtype(torch.float32, scale=True), T.Normalize(list(mean), list(std))]
    return T.Compose(steps)


def describe(transform: T.Compose) -> str:
    """A stable text form of a transform, used in cache keys."""
    return " | ".join(repr(step).replace("\n", " ") for step in transform.transforms)
