"""Data: read datasets (COMP5329 CSVs and any table or imagefolder), labels, images and splits."""

from .images import BadImage, check_images, load_image, resolve_image_dir, screen_images
from .labels import LABEL_IDS, LABEL_NAMES, LabelMap
from .records import DataFormatError, Record, is_labelled, read_records, require_labels
from .sources import Data, DataOptions, LabelForm, label_map, read_data
from .split import load_split, save_split, split_ids

__all__ = [
    "LABEL_IDS", "LABEL_NAMES", "LabelMap",
    "Record", "DataFormatError", "read_records", "is_labelled", "require_labels",
    "load_image", "BadImage", "check_images", "screen_images", "resolve_image_dir",
    "split_ids", "save_split", "load_split",
    "Data", "DataOptions", "LabelForm", "read_data", "label_map",
]
