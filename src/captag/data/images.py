"""Image loading in RGB, a fast decode check of an image folder, and locating that folder."""

from __future__ import annotations

import io
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from PIL import Image, ImageFile, UnidentifiedImageError

from captag.errors import BadImagesError, DataNotFoundError

log = logging.getLogger(__name__)
LISTED = 50  # most bad images named in one message
CHECK_SIZE = 64  # decode JPEGs at 1/8 scale or so during the check; truncation is still caught
_GOOD: set[tuple] = set()  # (path, size, mtime, inode) of files that decoded, for this process


def load_image(path, draft_size: int | None = None) -> Image.Image:
    """Open an image file (a path or a binary file object) of any format PIL reads and return
    it as RGB.

    With `draft_size`, JPEGs are decoded at a reduced scale whose sides stay at least that size.
    Transparent images are put on a white background.
    """
    with Image.open(path) as image:
        if draft_size and image.format == "JPEG":
            image.draft("RGB", (draft_size, draft_size))
        return _to_rgb(image)


def open_image(source, name: str = "image", draft_size: int | None = None) -> Image.Image:
    """An RGB image from a path, the bytes of an image file, or a PIL image; BadImagesError
    (naming `name`) when it cannot be read. With `draft_size`, a JPEG file is decoded at a
    reduced scale whose sides stay at least that size (faster, slightly different pixels)."""
    if isinstance(source, Image.Image):
        return _to_rgb(source)
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    elif not isinstance(source, (str, os.PathLike)):
        raise BadImagesError(f"{name}: expected a path, bytes or a PIL image, got "
                             f"{type(source).__name__}.")
    try:
        return load_image(source, draft_size)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise BadImagesError(f"{name}: cannot be read as an image ({error}).") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image.copy()
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode.startswith("I;16"):
        image = image.point(lambda v: v / 256).convert("L")  # 16-bit gray to 8-bit
    return image.convert("RGB")


@dataclass
class BadImage:
    image_id: str
    reason: str  # "missing", "empty file", "truncated" or "cannot decode: ..."


def file_state(path: Path) -> tuple | None:
    """(path, size, mtime, inode): changes whenever the file is rewritten; None if missing."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)


def check_image(path: Path) -> str | None:
    """Why the image at `path` cannot be used, or None when it decodes fully."""
    if not path.is_file():
        return "missing"
    if path.stat().st_size == 0:
        return "empty file"
    try:
        with Image.open(path) as image:
            if image.format == "JPEG":
                image.draft("RGB", (CHECK_SIZE, CHECK_SIZE))
            image.load()
    except UnidentifiedImageError:
        return "cannot decode: not an image format PIL can read"
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError... for bad files
        if "truncated" in str(exc):
            return "truncated"
        return f"cannot decode: {type(exc).__name__}: {exc}"
    return None


def check_images(image_ids: Iterable[str], image_dir: str | Path, workers: int | None = None,
                 progress: bool = False) -> list[BadImage]:
    """Decode every image and return the missing or broken ones, sorted by ID.

    Files that this process already found good, unchanged since, are not decoded again."""
    from .split import id_key

    states = {i: file_state(Path(image_dir) / i) for i in image_ids}
    ids = [i for i, state in states.items() if state not in _GOOD]
    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    saved, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
    try:
        with ThreadPoolExecutor(workers) as pool:  # PIL releases the GIL while decoding
            reasons = pool.map(check_image, (Path(image_dir) / i for i in ids))
            if progress:
                from tqdm import tqdm
                reasons = tqdm(reasons, total=len(ids), desc="checking images", unit="img")
            reasons = dict(zip(ids, reasons))
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved
    _GOOD.update(states[i] for i, reason in reasons.items() if reason is None)
    bad = [BadImage(i, r) for i, r in reasons.items() if r is not None]
    return sorted(bad, key=lambda b: id_key(b.image_id))


def resolve_image_dir(csv_path: str | Path, images: str | Path | None) -> Path:
    """The image folder: `images` when given, else data/ beside the CSV file."""
    if images:
        folder = Path(images)
        if not folder.is_dir():
            raise DataNotFoundError(f"Image folder {folder} (given with --images) does not exist. "
                                    "Pass the folder that holds the .jpg files with --images DIR.")
        return folder
    folder = Path(csv_path).parent / "data"
    if not folder.is_dir():
        raise DataNotFoundError(f"No image folder found: expected {folder} beside {csv_path}. "
                                "Put the images there or pass their folder with --images DIR.")
    return folder


def screen_images(records: Sequence, image_dir: str | Path, skip_bad: bool = False,
                  progress: bool = False, can_skip: bool = True) -> tuple[list, list[BadImage]]:
    """Decode the image of every record (see check_images) before any work starts.

    Returns (kept records, bad images). With no bad image, kept is all of `records` and the
    list is empty. Otherwise, unless `skip_bad`, raises BadImagesError whose message lists the
    bad ones ("N of M images in DIR cannot be used:", then "  ID: reason" lines, at most 50,
    then what to do); with `skip_bad`, logs that listing as a warning and keeps the other
    records, in their order. The caller records the bad list where it needs to (a run folder).
    `can_skip` False leaves --skip-bad out of the advice (commands that have no such option).
    """
    bad = check_images([r.image_id for r in records], image_dir, progress=progress)
    if not bad:
        return list(records), []
    listing = bad_listing(bad)
    if not skip_bad:
        raise BadImagesError(f"{len(bad)} of {len(records)} images in {image_dir} cannot be used:\n{listing}\n"
                             "Fix or remove them, pass the right folder with --images DIR"
                             + (", or pass --skip-bad to leave those rows out." if can_skip else "."))
    log.warning("Leaving out %d rows with bad images in %s:\n%s", len(bad), image_dir, listing)
    skipped = {b.image_id for b in bad}
    return [r for r in records if r.image_id not in skipped], bad


def bad_listing(bad: Sequence[BadImage], most: int = LISTED) -> str:
    """One "  ID: reason" line per bad image, at most `most`, then "  ... and N more"."""
    lines = [f"  {b.image_id}: {b.reason}" for b in bad[:most]]
    if len(bad) > most:
        lines.append(f"  ... and {len(bad) - most} more")
    return "\n".join(lines)
