"""The reader of any dataset (`captag.data.read_data`): each format, each label form, columns
chosen by name, images anywhere, and every bad input named by file, line and column."""

import builtins
import csv
import json
import shutil
from pathlib import Path

import pytest

from captag.data import DataOptions, LabelMap, label_map, read_data, read_records
from captag.data.labels import LABEL_NAMES
from captag.errors import DataFormatError, DataNotFoundError
from conftest import DATA, MINI

ROWS = read_records(MINI)[:12]


def words(record) -> list[str]:
    return [LABEL_NAMES[label] for label in record.labels]


def copy_images(root: Path, folder: str = "photos/a", suffix: str = ".jpg") -> list[str]:
    """The first ROWS' images copied under root/folder (converted when suffix is not .jpg);
    their paths relative to root."""
    from PIL import Image
    (root / folder).mkdir(parents=True, exist_ok=True)
    paths = []
    for record in ROWS:
        path = f"{folder}/{Path(record.image_id).stem}{suffix}"
        if suffix == ".jpg":
            shutil.copy(DATA / "data" / record.image_id, root / path)
        else:
            Image.open(DATA / "data" / record.image_id).save(root / path)
        paths.append(path)
    return paths


def write_csv(path: Path, header: list[str], rows: list[list], delimiter: str = ",") -> Path:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture
def tagged(tmp_path) -> Path:
    """A pandas-style CSV: image,text,tags with tags such as 'person|traffic light'."""
    paths = copy_images(tmp_path)
    return write_csv(tmp_path / "tags.csv", ["image", "text", "tags"],
                     [[p, r.caption, "|".join(words(r))] for p, r in zip(paths, ROWS)])


# --- formats ---------------------------------------------------------------------------------

def test_a_csv_with_word_tags(tagged):
    data = read_data(tagged)
    assert (data.format, data.image_column, data.text_column) == ("csv", "image", "text")
    assert data.labels.kind == "delimited" and data.labels.sep == "|"
    assert [r.labels for r in data.records] == [tuple(words(r)) for r in ROWS]
    assert [r.caption for r in data.records] == [r.caption for r in ROWS]
    assert data.records[0].line == 2 and data.records[0].key == "photos/a/9.jpg"
    assert data.image_dir() == tagged.parent
    assert "'tags' split on '|'" in data.chosen() and "12 rows read" in data.chosen()
    assert (data.image_dir() / data.records[0].image_id).is_file()


def test_a_tsv_and_a_semicolon_csv_are_sniffed(tmp_path):
    rows = [["a.jpg", r.caption, " ".join(words(r)).replace("traffic light", "light")] for r in ROWS]
    for name, delimiter in [("data.tsv", "\t"), ("data.csv", ";")]:
        data = read_data(write_csv(tmp_path / name, ["image", "caption", "labels"], rows, delimiter))
        assert data.delimiter == delimiter and data.labels.sep == " "
        assert [r.caption for r in data.records] == [r.caption for r in ROWS]


def test_json_lines_with_label_lists(tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", [
        {"file_name": f"{r.image_id}", "caption": r.caption, "labels": words(r)} for r in ROWS])
    data = read_data(path)
    assert data.format == "jsonl" and data.labels.kind == "list"
    assert data.records[3].labels == tuple(words(ROWS[3])) and data.records[3].line == 4


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    rows = [{"path": r.image_id, "title": r.caption, "label": words(r)} for r in ROWS]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "data.parquet")
    data = read_data(tmp_path / "data.parquet")
    assert (data.format, data.image_column, data.text_column) == ("parquet", "path", "title")
    assert [r.labels for r in data.records] == [tuple(words(r)) for r in ROWS]


def test_parquet_without_pyarrow_names_the_extra(tmp_path, monkeypatch):
    (tmp_path / "data.parquet").write_bytes(b"PAR1")
    real = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name.startswith("pyarrow"):
            raise ImportError(name)
        return real(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    with pytest.raises(DataNotFoundError, match=r"captag\[parquet\]"):
        read_data(tmp_path / "data.parquet")


@pytest.mark.parametrize("metadata", ["metadata.jsonl", "metadata.csv"])
def test_an_imagefolder_with_nested_pngs(tmp_path, metadata):
    paths = copy_images(tmp_path / "set", "train/x/y", ".png")
    rows = [{"file_name": p, "text": r.caption, "tags": ", ".join(words(r))}
            for p, r in zip(paths, ROWS)]
    if metadata.endswith(".jsonl"):
        write_jsonl(tmp_path / "set" / metadata, rows)
    else:
        write_csv(tmp_path / "set" / metadata, list(rows[0]), [list(r.values()) for r in rows])
    for given in (tmp_path / "set", tmp_path / "set" / metadata):
        data = read_data(given)
        assert data.format == "imagefolder" and data.image_column == "file_name"
        assert data.labels.sep == "," and data.records[0].labels == tuple(words(ROWS[0]))
        assert data.image_dir() == tmp_path / "set"
        assert (data.image_dir() / data.records[5].image_id).suffix == ".png"


def test_comp5329_rewritten_by_the_csv_module_reads_the_same(tmp_path):
    records = read_records(MINI)
    path = write_csv(tmp_path / "rewritten.csv", ["ImageID", "Labels", "Caption"],
                     [[r.image_id, " ".join(map(str, r.labels)), r.caption] for r in records])
    assert any('"' in r.caption for r in records)  # its quotes are doubled now
    data = read_data(path)
    assert data.is_comp5329 and data.records == records
    assert read_data(MINI).records == records
    assert label_map(data) == LabelMap.default()


def test_comp5329_header_with_other_image_names(tmp_path):
    path = write_csv(tmp_path / "data.csv", ["ImageID", "Labels", "Caption"],
                     [["photos/img_0001.png", "1 3", "a car"], ["b/17.jpg", "2", "a bike"]])
    assert [r.image_id for r in read_data(path).records] == ["photos/img_0001.png", "b/17.jpg"]


def test_the_format_can_be_given(tmp_path):
    path = write_jsonl(tmp_path / "data.txt", [{"text": "a", "labels": ["x"]},
                                                {"text": "b", "labels": ["y"]}])
    with pytest.raises(DataFormatError, match="data.txt:1"):
        read_data(path)  # read as a CSV by its extension
    assert read_data(path, DataOptions(format="jsonl")).records[1].labels == ("y",)


# --- label forms -------------------------------------------------------------------------------

@pytest.mark.parametrize("sep", [" ", "|", ";", ", "])
def test_delimited_labels_with_any_separator(tmp_path, sep):
    tags = [sep.join(["dog", "cat"]), "dog", sep.join(["cat", "bird"])]
    path = write_csv(tmp_path / "d.csv", ["text", "tags"], [[f"t{i}", t] for i, t in enumerate(tags)])
    data = read_data(path)
    assert [r.labels for r in data.records] == [("dog", "cat"), ("dog",), ("cat", "bird")]
    assert label_map(data).ids == ("bird", "cat", "dog")


def test_a_label_may_hold_spaces_and_the_separator_can_be_given(tmp_path):
    path = write_csv(tmp_path / "d.csv", ["text", "tags"], [["a", "traffic light/stop sign"],
                                                            ["b", "stop sign"]])
    data = read_data(path, DataOptions(label_sep="/"))
    assert data.records[0].labels == ("traffic light", "stop sign")


@pytest.mark.parametrize("prefix", [True, False])
def test_one_zero_one_column_per_label(tmp_path, prefix):
    path = write_csv(tmp_path / "d.csv", ["text", "tag_dog", "tag_cat", "other"],
                     [["a", "1", "0", "x"], ["b", "1", "1", "y"], ["c", "0", "0", "z"]])
    options = (DataOptions(label_columns_prefix="tag_") if prefix
               else DataOptions(label_columns="tag_dog,tag_cat"))
    data = read_data(path, options)
    expected = ("dog",) if prefix else ("tag_dog",)
    assert data.records[0].labels == expected and data.records[2].labels == ()
    assert len(data.records[1].labels) == 2


def test_single_label_data_is_multi_label_with_one_label_each(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a", "label": 3}, {"text": "b", "label": 10},
                                              {"text": "c", "label": 3}])
    data = read_data(path)
    assert [r.labels for r in data.records] == [("3",), ("10",), ("3",)]
    assert label_map(data).ids == ("3", "10")  # numbers in numeric order


def test_a_thousand_labels(tmp_path):
    rows = [[f"text {i}", f"tag{i}|tag{(i * 7 + 1) % 1000}"] for i in range(1000)]
    data = read_data(write_csv(tmp_path / "d.csv", ["text", "tags"], rows))
    assert len(label_map(data)) == 1000


def test_a_labels_file_sets_the_order_and_the_vocabulary(tmp_path, tagged):
    names = sorted(LABEL_NAMES.values(), reverse=True)
    (tmp_path / "labels.txt").write_text("\n".join(names) + "\n")
    labels = label_map(read_data(tagged), str(tmp_path / "labels.txt"))
    assert labels.ids == tuple(names)
    (tmp_path / "labels.txt").write_text("person\ncar\n")
    with pytest.raises(DataFormatError, match=r"tags.csv:2: .*'dog' is not in .*labels.txt"):
        label_map(read_data(tagged), str(tmp_path / "labels.txt"))


def test_one_label_is_not_enough(tmp_path):
    path = write_csv(tmp_path / "d.csv", ["text", "tags"], [["a", "dog"], ["b", "dog"]])
    with pytest.raises(DataFormatError, match="at least 2 labels"):
        label_map(read_data(path))


def test_a_label_the_run_never_learned_names_the_row(tagged):
    names = tuple(name for name in LABEL_NAMES.values() if name != "train")
    with pytest.raises(DataFormatError, match=r"tags.csv:4: column 'tags': the label 'train' is "
                                              r"not one the run learned"):
        read_data(tagged, known=LabelMap(names, names))


# --- columns and bad values --------------------------------------------------------------------

def test_two_columns_that_fit_are_both_named(tmp_path):
    path = write_csv(tmp_path / "d.csv", ["image", "path", "text", "tags"], [["a", "b", "c", "d|e"]])
    with pytest.raises(DataFormatError, match=r"d.csv:1: both columns 'image' and 'path'.*--image-column"):
        read_data(path)
    assert read_data(path, DataOptions(image_column="path")).records[0].image_id == "b"


def test_columns_can_be_named_and_a_wrong_name_is_refused(tmp_path):
    path = write_csv(tmp_path / "d.csv", ["photo", "blurb", "genres"], [["a.jpg", "x", "drama"]])
    with pytest.raises(DataFormatError, match="no image or text column"):
        read_data(path)
    options = DataOptions(image_column="photo", text_column="blurb", label_column="genres")
    assert read_data(path, options).records[0].labels == ("drama",)
    with pytest.raises(DataFormatError, match=r"--text-column 'blurp' is not a column"):
        read_data(path, DataOptions(text_column="blurp"))


def test_text_only_and_image_only_data(tmp_path):
    text = read_data(write_csv(tmp_path / "t.csv", ["text", "tags"], [["a", "x"], ["b", "y"]]))
    assert text.image_column is None and text.records[0].key == "line 2"
    with pytest.raises(DataNotFoundError, match="no image column"):
        text.image_dir()
    image = read_data(write_csv(tmp_path / "i.csv", ["image", "tags"], [["a.jpg", "x"]]))
    assert image.text_column is None and image.records[0].caption == ""


@pytest.mark.parametrize("row, column, words", [
    (["", "a caption", "dog"], "image", "an image path is missing"),
    (["a.jpg", "  ", "dog"], "text", "a text is missing"),
    (["a.jpg", "a caption", ""], "tags", "the labels are missing"),
    (["a.jpg", "a caption", "dog||cat"], "tags", "an empty label"),
    (["a.jpg", "a caption", "dog|dog"], "tags", "the label 'dog' is listed twice"),
])
def test_bad_values_name_the_file_line_and_column(tmp_path, row, column, words):
    path = write_csv(tmp_path / "d.csv", ["image", "text", "tags"],
                     [["ok.jpg", "fine", "cat|dog"], row, ["ok2.jpg", "fine", "dog"]])
    with pytest.raises(DataFormatError) as error:
        read_data(path)
    assert f"d.csv:3: column {column!r}: {words}" in str(error.value)
    assert "--skip-bad" in str(error.value)
    data = read_data(path, DataOptions(skip_bad=True))
    assert [r.line for r in data.records] == [2, 4]
    assert data.skipped == [{"line": 3, "column": column, "problem": error.value.args[0].split(
        f"column {column!r}: ")[1].split(". ")[0]}]
    assert "1 left out" in data.chosen()


def test_bad_json_values_are_named(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a", "labels": ["x"]},
                                              {"text": "b", "labels": [{"x": 1}]}])
    with pytest.raises(DataFormatError, match=r"d.jsonl:2: column 'labels': the label list"):
        read_data(path)
    (tmp_path / "e.jsonl").write_text('{"text": "a", "labels": ["x"]}\n{"text": "b", \n')
    with pytest.raises(DataFormatError, match=r"e.jsonl:2: not valid JSON"):
        read_data(tmp_path / "e.jsonl")


def test_a_one_hot_value_that_is_not_0_or_1(tmp_path):
    path = write_csv(tmp_path / "d.csv", ["text", "tag_a", "tag_b"], [["x", "1", "0"], ["y", "2", "1"]])
    with pytest.raises(DataFormatError, match=r"d.csv:3: column 'tag_a': '2' is not 0 or 1"):
        read_data(path, DataOptions(label_columns_prefix="tag_"))


def test_a_row_with_too_many_fields(tmp_path):
    (tmp_path / "d.csv").write_text('text,tags\n"a, b",x\nc, d,y\n')
    with pytest.raises(DataFormatError, match=r"d.csv:3: 3 fields where the header has 2"):
        read_data(tmp_path / "d.csv")


def test_images_resolve_against_the_images_option_or_stay_absolute(tmp_path):
    paths = copy_images(tmp_path / "elsewhere", "sub")
    rows = [[paths[0], "a", "x"], [str(tmp_path / "elsewhere" / paths[1]), "b", "y"]]
    path = write_csv(tmp_path / "d.csv", ["image", "text", "tags"], rows)
    data = read_data(path, DataOptions(images=str(tmp_path / "elsewhere")))
    assert all((data.image_dir() / r.image_id).is_file() for r in data.records)
    with pytest.raises(DataNotFoundError, match="--images"):
        read_data(path, DataOptions(images=str(tmp_path / "nope"))).image_dir()


def test_missing_paths_and_unknown_formats(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        read_data(tmp_path / "nope.csv")
    with pytest.raises(DataNotFoundError, match="without metadata.jsonl or metadata.csv"):
        read_data(tmp_path)
    (tmp_path / "d.xlsx").write_text("x")
    with pytest.raises(DataFormatError, match="--format"):
        read_data(tmp_path / "d.xlsx")
