"""`captag data`'s backend (`captag.training.inspect`): label counts, labels per row, token
lengths, images found, missing and undecodable, duplicates, the plot and the report, on small
datasets made in tmp_path from mini.csv's rows and images."""

import csv
import shutil
from collections import Counter
from pathlib import Path

import pytest

from captag.data import DataOptions, read_records
from captag.data.labels import LABEL_NAMES
from captag.errors import BadImagesError, DataFormatError
from captag.training.inspect import inspect_data, load_tokenizer, report_lines
from conftest import DATA, MINI

ROWS = read_records(MINI)[:20]


def tags(record) -> list[str]:
    return [LABEL_NAMES[label] for label in record.labels]


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def tagged(tmp_path) -> tuple[Path, list[list]]:
    """image,text,tags rows ('person|dog') with their images under photos/."""
    (tmp_path / "photos").mkdir()
    rows = []
    for record in ROWS:
        shutil.copy(DATA / "data" / record.image_id, tmp_path / "photos" / record.image_id)
        rows.append([f"photos/{record.image_id}", record.caption, "|".join(tags(record))])
    return tmp_path, rows


def test_label_counts_labels_per_row_and_report(tagged):
    root, rows = tagged
    result = inspect_data(write_csv(root / "tags.csv", ["image", "text", "tags"], rows))
    expected = Counter(tag for record in ROWS for tag in tags(record))
    counts = result["labels"]["counts"]
    assert {c["label"]: c["rows"] for c in counts} == dict(expected)
    assert [c["rows"] for c in counts] == sorted(expected.values(), reverse=True)
    per_row = Counter(len(record.labels) for record in ROWS)
    assert result["labels"]["per_row"]["histogram"] == {str(k): per_row[k] for k in sorted(per_row)}
    assert result["labels"]["per_row"]["max"] == max(per_row)
    assert result["rows_read"] == result["rows_used"] == len(ROWS)
    assert result["columns"] == {"image": "image", "text": "text", "labels": "tags"}
    assert result["images"]["found"] == len(ROWS) and result["images"]["missing"] == 0
    assert result["images"]["sizes"]["width"]["max"] <= 320
    assert result["duplicates"]["rows"]["count"] == 0
    assert result["duplicates"]["images"]["count"] == 0
    text = "\n".join(report_lines(result))
    assert all(label in text for label in expected)
    assert "tags.csv" in text


def test_duplicate_rows_and_images(tagged):
    root, rows = tagged
    shutil.copy(root / rows[1][0], root / "photos" / "copy.jpg")
    rows = rows + [rows[0], ["photos/copy.jpg", "another caption", rows[1][2]]]
    result = inspect_data(write_csv(root / "tags.csv", ["image", "text", "tags"], rows))
    duplicates = result["duplicates"]
    assert duplicates["rows"]["count"] == 1
    assert duplicates["rows"]["examples"] == [[2, len(ROWS) + 2]]  # lines: header is line 1
    assert duplicates["images"]["count"] == 1
    assert sorted(duplicates["images"]["examples"][0]) == sorted([rows[1][0], "photos/copy.jpg"])
    assert duplicates["paths"]["count"] == 1
    assert duplicates["paths"]["examples"][0]["image"] == rows[0][0]
    assert any(line.startswith("Duplicate rows (same image, text and labels): 1, e.g. lines 2 and")
               for line in report_lines(result))


def test_missing_and_truncated_images(tagged):
    root, rows = tagged
    (root / rows[0][0]).unlink()
    data = (root / rows[1][0]).read_bytes()
    (root / rows[1][0]).write_bytes(data[: len(data) // 2])
    path = write_csv(root / "tags.csv", ["image", "text", "tags"], rows)
    with pytest.raises(BadImagesError) as error:
        inspect_data(path)
    assert rows[0][0] in str(error.value) and rows[1][0] in str(error.value)
    result = inspect_data(path, DataOptions(skip_bad=True))
    images = result["images"]
    assert (images["missing"], images["undecodable"]) == (1, 1)
    assert images["missing_examples"] == [rows[0][0]]
    assert images["undecodable_examples"] == [{"image": rows[1][0], "reason": "truncated"}]
    assert result["rows_used"] == len(ROWS) - 2
    assert any(rows[1][0] in line for line in report_lines(result))


def test_text_only_dataset_and_plot(tmp_path):
    rows = [[record.caption, "|".join(tags(record))] for record in ROWS]
    plot = tmp_path / "out" / "labels.png"
    result = inspect_data(write_csv(tmp_path / "text.csv", ["text", "tags"], rows), plot=str(plot))
    assert result["columns"]["image"] is None
    assert result["images"]["checked"] == 0
    assert result["labels"]["distinct"] == len({t for record in ROWS for t in tags(record)})
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result["plot"] == str(plot)
    assert any("Images: none" in line for line in report_lines(result))


def test_token_lengths_and_rows_cut(tmp_path):
    rows = [[record.caption, "|".join(tags(record))] for record in ROWS]
    path = write_csv(tmp_path / "text.csv", ["text", "tags"], rows)
    result = inspect_data(path, max_length=12)
    tokenizer = load_tokenizer("all-MiniLM-L6-v2")
    lengths = [len(tokenizer(record.caption)["input_ids"]) for record in ROWS]
    text = result["text"]
    assert text["tokens"]["min"] == min(lengths) and text["tokens"]["max"] == max(lengths)
    assert 0 < text["rows_cut"] == sum(n > 12 for n in lengths)
    assert inspect_data(path, max_length=512)["text"]["rows_cut"] == 0


def test_refuses_what_train_refuses(tmp_path):
    rows = [[record.caption, "dog"] for record in ROWS]
    with pytest.raises(DataFormatError, match="only 1 distinct label"):
        inspect_data(write_csv(tmp_path / "one.csv", ["text", "tags"], rows))
    with pytest.raises(DataFormatError, match="has no labels, and training needs"):
        inspect_data(write_csv(tmp_path / "none.csv", ["text"], [[r.caption] for r in ROWS]))
