"""Tests of captag.data on the real COMP5329 files and on small malformed copies."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from captag.data import (
    LABEL_IDS, BadImage, DataFormatError, LabelMap, Record, check_images, is_labelled, load_image,
    load_split, read_records, require_labels, resolve_image_dir, save_split, screen_images, split_ids,
)
from captag.errors import BadImagesError, ConfigError, DataNotFoundError, RunFolderError

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "comp5329"
HEADER = "ImageID,Labels,Caption"


# --- records ---------------------------------------------------------------

@pytest.mark.parametrize("name, count", [
    ("train.csv", 18000), ("mini.csv", 1000), ("test.csv", 10000), ("test_mini.csv", 500)])
def test_record_counts(data_dir, name, count):
    records = read_records(data_dir / name)
    assert len(records) == count
    assert is_labelled(records) == (not name.startswith("test"))


def test_malformed_captions_are_exact(data_dir):
    records = {r.image_id: r for r in read_records(data_dir / "train.csv")}
    assert records["9084.jpg"].caption == (
        'A street sign labeled "Seltzer Way," with a red fire hydrant in the foreground '
        "and a street stretching into the background.")
    assert records["1014.jpg"].caption == (
        "Atop an oriental rug rests a dog and two low-lying tables and a taller one\n"
        "full of very tidily arranged piles of jeans and tops.")
    assert records["2259.jpg"].caption == "Men loading up a van with bags and suitcases.\n."
    assert records["6751.jpg"].caption == "Red motor \nscooter parked on the sand with a sunset in background."
    assert (records["9084.jpg"].line, records["1014.jpg"].line, records["6751.jpg"].line) == (9089, 1016, 6755)


def test_labels_of_some_rows(data_dir):
    records = read_records(data_dir / "train.csv")
    assert records[0].image_id == "0.jpg" and records[0].labels == (1,) and records[0].line == 2
    by_id = {r.image_id: r for r in records}
    assert by_id["1.jpg"].labels == (1, 19)
    assert by_id["3.jpg"].labels == (8, 3, 13)
    assert by_id["9084.jpg"].labels == (3, 1, 11)
    assert by_id["2259.jpg"].labels == (1, 3)
    assert all(set(r.labels) <= set(LABEL_IDS) for r in records)


def test_unlabelled_file(data_dir):
    records = read_records(data_dir / "test_mini.csv")
    assert records[0].image_id == "30000.jpg" and records[0].labels is None
    assert records[1].caption == "A beautiful young woman holding an orange frisbee."


def test_mini_is_subset_of_train(data_dir):
    train = {r.image_id: r for r in read_records(data_dir / "train.csv")}
    for r in read_records(data_dir / "mini.csv"):
        assert (r.caption, r.labels) == (train[r.image_id].caption, train[r.image_id].labels)


def test_bom_crlf_and_blank_lines(tmp_path):
    path = tmp_path / "x.csv"
    text = HEADER + "\r\n\r\n" + '7.jpg,2 1,"a "b", c\r\n\r\nd"\r\n\r\n8.jpg,5,"e"\r\n'
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    records = read_records(path)
    assert [(r.image_id, r.caption, r.labels, r.line) for r in records] == [
        ("7.jpg", 'a "b", c\n\nd', (2, 1), 3), ("8.jpg", "e", (5,), 7)]


# As in the original, a quote inside a caption is not doubled, so these files are not standard
# CSV and read in the original's layout; the bad record goes on line 5.
GOOD = [HEADER, '0.jpg,1,"ok"', '1.jpg,2 3,"two "quoted', 'lines"']


@pytest.mark.parametrize("bad, image_id, words", [
    ('5.jpg,12,"x"', "5.jpg", "'12'"),
    ('5.jpg,0,"x"', "5.jpg", "'0'"),
    ('5.jpg,1 20,"x"', "5.jpg", "'20'"),
    ('5.jpg,cat,"x"', "5.jpg", "'cat'"),
    ('5.jpg,,"x"', "5.jpg", "empty"),
    ('5.jpg,"no labels"', "5.jpg", "Labels field is missing"),
    ('0.jpg,3,"again"', "0.jpg", "line 2"),
    ('5.jpg,1,""', "5.jpg", "caption is empty"),
    ('5.jpg,1," \t "', "5.jpg", "caption is empty"),
    ('5.jpg,1,"no closing quote', "5.jpg", "closing"),
    ('5.jpg,1,no opening quote"', "5.jpg", "does not start with a double quote"),
    ('5.jpg,1,"text" after', "5.jpg", "after"),
])
def test_bad_record_raises(tmp_path, bad, image_id, words):
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(GOOD + [bad, '9.jpg,1,"last"']) + "\n")
    with pytest.raises(DataFormatError) as info:
        read_records(path)
    message = str(info.value)
    assert f"{path}:5:" in message and image_id in message and words in message
    assert info.value.line == 5 and info.value.image_id == image_id


@pytest.mark.parametrize("text, line", [
    ('ImageID,Label,Caption\n0.jpg,1,"x"\n', 1),
    ('0.jpg,1,"x"\n', 1),
    ("", 1),
    (HEADER + '\n\nstray text\n0.jpg,1,"x"\n', 3),
    ('ImageID,Caption\n30000.jpg,1,"x"\n', 2),
])
def test_bad_header_or_stray_line_raises(tmp_path, text, line):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataFormatError, match=f":{line}: "):
        read_records(path)


UNLABELLED = ["ImageID,Caption", '0.jpg,"ok"', '1.jpg,"two "quoted', 'lines"']  # as GOOD


@pytest.mark.parametrize("bad_id", ["62.png", "62.JPG", "62", "a/../x.jpg"])
@pytest.mark.parametrize("good, rest", [(GOOD, ',1 2,"x"'), (UNLABELLED, ',"x"')])
def test_record_with_a_bad_id_raises(tmp_path, bad_id, good, rest):
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(good + [bad_id + rest, '9.jpg' + rest]) + "\n")
    with pytest.raises(DataFormatError) as info:
        read_records(path)
    message = str(info.value)
    assert f"{path}:5:" in message and repr(bad_id) in message and "123.jpg" in message
    assert info.value.line == 5 and info.value.image_id == bad_id


@pytest.mark.parametrize("good, bad", [
    (GOOD, '62.png,"x"'), (GOOD, '62.png,cat,"x"'), (GOOD, "62.png, 1,x"), (GOOD, 'two words,1,"x"'),
    (UNLABELLED, '62.png,1,"x"'), (UNLABELLED, 'two words,"x"'), (UNLABELLED, '62.png, "x"'),
])
def test_line_not_shaped_like_a_record_stays_in_the_caption(tmp_path, good, bad):
    path = tmp_path / "x.csv"
    path.write_text("\n".join(good[:3] + [bad + ' more"']) + "\n")
    records = read_records(path)
    assert len(records) == 2 and records[1].caption == 'two "quoted\n' + bad + " more"


@pytest.mark.parametrize("text", [HEADER + "\n", "ImageID,Caption", HEADER + "\r\n\r\n  \n"])
def test_file_without_records_raises(tmp_path, text):
    path = tmp_path / "empty.csv"
    path.write_text(text)
    with pytest.raises(DataFormatError, match="no records") as info:
        read_records(path)
    assert str(path) in str(info.value)


def test_missing_csv_or_folder_raises(tmp_path):
    with pytest.raises(DataNotFoundError, match="nope.csv"):
        read_records(tmp_path / "nope.csv")
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(DataNotFoundError, match="dir.csv.* is a folder"):
        read_records(tmp_path / "dir.csv")


def test_require_labels(data_dir):
    require_labels(read_records(data_dir / "mini.csv"), data_dir / "mini.csv", "training")
    path = data_dir / "test_mini.csv"
    with pytest.raises(DataFormatError, match="no Labels column.*training needs labelled rows") as info:
        require_labels(read_records(path), path, "training")
    assert str(info.value).startswith(f"{path}:1: ") and info.value.line == 1


def test_custom_label_ids(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text(HEADER + '\n0.jpg,12,"x"\n')
    assert read_records(path, label_ids=range(1, 20))[0].labels == (12,)


# --- labels ----------------------------------------------------------------

def test_label_map_round_trip(tmp_path):
    label_map = LabelMap.default()
    assert len(label_map) == 18 and label_map.ids == LABEL_IDS and label_map.names[11] == "stop sign"
    row = label_map.encode([8, 3, 13])
    assert row.dtype == np.float32 and row.sum() == 3 and row[label_map.ids.index(13)] == 1
    assert label_map.decode(row) == [3, 8, 13]
    assert label_map.decode(row.astype(bool)) == [3, 8, 13]
    matrix = label_map.encode_many([[1], [19, 2], []])
    assert matrix.shape == (3, 18) and matrix.sum() == 3
    with pytest.raises(ValueError, match="12"):
        label_map.encode([12])
    label_map.save(tmp_path / "labels.json")
    assert LabelMap.load(tmp_path / "labels.json") == label_map


@pytest.mark.parametrize("text", [
    "not json", "[1, 2]", '{"ids": [1, 2]}', '{"ids": "12", "names": "ab"}', '{"ids": [1, 2], "names": ["a"]}',
    '{"ids": [1, 1], "names": ["a", "b"]}', '{"ids": [null], "names": ["a"]}', '{"ids": [1.5], "names": ["a"]}',
    '{"ids": [1], "names": [2]}',
])
def test_label_map_load_rejects_bad_files(tmp_path, text):
    path = tmp_path / "labels.json"
    path.write_text(text)
    with pytest.raises(RunFolderError, match="labels.json"):
        LabelMap.load(path)
    with pytest.raises(RunFolderError, match="missing"):
        LabelMap.load(tmp_path / "nope.json")


# --- split -----------------------------------------------------------------

def test_split(data_dir, tmp_path):
    ids = [r.image_id for r in read_records(data_dir / "mini.csv")]
    train, val = split_ids(ids, 0.2, seed=0)
    assert (len(train), len(val)) == (800, 200)
    assert set(train) | set(val) == set(ids) and not set(train) & set(val)
    assert train == sorted(train, key=lambda i: int(i[:-4])) and val == sorted(val, key=lambda i: int(i[:-4]))
    assert split_ids(ids, 0.2, seed=0) == (train, val)
    assert split_ids(list(reversed(ids)), 0.2, seed=0) == (train, val)
    assert split_ids(ids, 0.2, seed=1)[1] != val
    assert split_ids(ids, 0.0) == (sorted(ids, key=lambda i: int(i[:-4])), [])
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match="val_fraction"):
            split_ids(ids, bad)
    save_split(tmp_path / "split.json", train, val, seed=0, val_fraction=0.2)
    assert load_split(tmp_path / "split.json") == (train, val)


def test_split_edges():
    ids = [f"{i}.jpg" for i in range(10)]
    assert split_ids(ids, 0) == (ids, [])
    assert split_ids(ids[:1], 0.4) == (ids[:1], [])
    assert len(split_ids(ids, 0.9)[0]) == 1
    with pytest.raises(ConfigError, match="val_fraction 0.96 leaves no training rows"):
        split_ids(ids, 0.96)


@pytest.mark.parametrize("text", [
    "garbage", "[1, 2]", '{"train": []}', '{"val": []}', '{"train": 5, "val": []}', '{"train": ["1.jpg"], "val": [2]}',
])
def test_load_split_rejects_bad_files(tmp_path, text):
    path = tmp_path / "split.json"
    path.write_text(text)
    with pytest.raises(RunFolderError, match="split.json"):
        load_split(path)
    with pytest.raises(RunFolderError, match="missing"):
        load_split(tmp_path / "nope.json")


# --- images ----------------------------------------------------------------

@pytest.fixture
def image_dir(data_dir, tmp_path):
    src = data_dir / "data" / "0.jpg"
    raw = src.read_bytes()
    image = Image.open(src).convert("RGB")
    shutil.copy(src, tmp_path / "1.jpg")
    image.save(tmp_path / "2.jpg", format="PNG")  # PNG content under a .jpg name
    image.convert("CMYK").save(tmp_path / "3.jpg", format="JPEG")
    image.convert("L").save(tmp_path / "4.jpg", format="JPEG")
    image.convert("RGBA").save(tmp_path / "5.png")
    image.convert("P").save(tmp_path / "6.png")
    (tmp_path / "8.jpg").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "9.jpg").write_bytes(b"not an image at all" * 50)
    (tmp_path / "10.jpg").write_bytes(b"")
    return tmp_path


def test_check_images_reports_bad_ones(image_dir):
    ids = ["10.jpg", "9.jpg", "8.jpg", "7.jpg", "6.png", "5.png", "4.jpg", "3.jpg", "2.jpg", "1.jpg"]
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        bad = check_images(ids, image_dir, workers=2)
        assert ImageFile.LOAD_TRUNCATED_IMAGES is True
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    assert [b.image_id for b in bad] == ["7.jpg", "8.jpg", "9.jpg", "10.jpg"]
    assert bad[0] == BadImage("7.jpg", "missing") and bad[1] == BadImage("8.jpg", "truncated")
    assert bad[2].reason.startswith("cannot decode") and bad[3].reason == "empty file"


@pytest.mark.parametrize("name", ["1.jpg", "2.jpg", "3.jpg", "4.jpg", "5.png", "6.png"])
def test_load_image_gives_rgb(image_dir, name):
    image = load_image(image_dir / name)
    assert image.mode == "RGB" and image.size == (240, 320)


def test_load_image_draft(data_dir):
    image = load_image(data_dir / "data" / "0.jpg", draft_size=100)
    assert image.mode == "RGB" and image.size == (120, 160)


def test_check_real_images(data_dir):
    ids = [r.image_id for r in read_records(data_dir / "test_mini.csv")]
    assert check_images(ids, data_dir / "data") == []


def test_resolve_image_dir(data_dir, tmp_path):
    assert resolve_image_dir(data_dir / "train.csv", None) == data_dir / "data"
    assert resolve_image_dir("whatever.csv", str(tmp_path)) == tmp_path
    with pytest.raises(DataNotFoundError, match="--images DIR"):
        resolve_image_dir(tmp_path / "train.csv", None)
    with pytest.raises(DataNotFoundError, match="--images DIR"):
        resolve_image_dir(tmp_path / "train.csv", str(tmp_path / "nope"))


def _records(ids):
    return [Record(image_id, "a caption", (1,), line) for line, image_id in enumerate(ids, start=2)]


def test_screen_images(image_dir):
    records = _records(["1.jpg", "7.jpg", "2.jpg", "10.jpg", "3.jpg"])
    assert screen_images(records[::2], image_dir) == (records[::2], [])
    with pytest.raises(BadImagesError) as info:
        screen_images(records, image_dir)
    assert str(info.value) == (
        f"2 of 5 images in {image_dir} cannot be used:\n  7.jpg: missing\n  10.jpg: empty file\n"
        "Fix or remove them, pass the right folder with --images DIR, or pass --skip-bad to leave those rows out.")
    kept, bad = screen_images(records, image_dir, skip_bad=True)
    assert kept == records[::2] and bad == [BadImage("7.jpg", "missing"), BadImage("10.jpg", "empty file")]


def test_screen_images_lists_at_most_50(tmp_path):
    records = _records([f"{i}.jpg" for i in range(53)])
    with pytest.raises(BadImagesError) as info:
        screen_images(records, tmp_path)
    lines = str(info.value).split("\n")
    assert lines[0] == f"53 of 53 images in {tmp_path} cannot be used:"
    assert lines[1:51] == [f"  {i}.jpg: missing" for i in range(50)] and lines[51] == "  ... and 3 more"


def test_check_images_decodes_an_unchanged_good_file_once(image_dir, monkeypatch):
    import captag.data.images as images
    decoded = []
    real = images.check_image
    monkeypatch.setattr(images, "check_image", lambda path: decoded.append(path.name) or real(path))
    assert check_images(["1.jpg", "2.jpg"], image_dir) == []
    assert check_images(["1.jpg", "2.jpg"], image_dir) == []
    assert sorted(decoded) == ["1.jpg", "2.jpg"]
    raw = (image_dir / "1.jpg").read_bytes()
    (image_dir / "1.jpg").write_bytes(raw[: len(raw) // 2])  # changed since: checked again
    assert check_images(["1.jpg", "2.jpg"], image_dir) == [BadImage("1.jpg", "truncated")]
    assert sorted(decoded) == ["1.jpg", "1.jpg", "2.jpg"]
