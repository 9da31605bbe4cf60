"""The Python prediction API: Predictor.load(run).predict(images, captions)."""

import pytest
from PIL import Image

from captag.data import read_records
from captag.errors import BadImagesError, InputError
from captag.inference.predictor import Predictor
from conftest import DATA, MINI


@pytest.fixture(scope="module")
def predictor(frozen_run):
    return Predictor.load(frozen_run)


@pytest.fixture(scope="module")
def rows():
    return read_records(MINI)[:5]


def test_one_image_as_path_bytes_or_pil_gives_one_result(predictor, rows):
    path, caption = DATA / "data" / rows[0].image_id, rows[0].caption
    results = [predictor.predict(source, caption)
               for source in (path, str(path), path.read_bytes(), Image.open(path))]
    first = results[0]
    assert set(first) == {"labels", "probabilities", "threshold"}
    assert len(first["probabilities"]) == 18 and first["labels"]
    assert all(set(label) == {"id", "name"} for label in first["labels"])
    for other in results[1:]:
        assert other["labels"] == first["labels"]
        for name, p in first["probabilities"].items():
            assert other["probabilities"][name] == pytest.approx(p, abs=1e-5)


def test_a_batch_gives_the_same_as_one_by_one_and_as_evaluate(predictor, rows):
    images = [DATA / "data" / r.image_id for r in rows]
    batch = predictor.predict(images, [r.caption for r in rows], batch_size=2)
    assert len(batch) == 5
    one = predictor.predict(images[3], rows[3].caption)
    assert batch[3]["labels"] == one["labels"]
    probs = predictor.predict_probs(rows, DATA / "data", progress=False)
    for result, row in zip(batch, probs):
        assert list(result["probabilities"].values()) == pytest.approx(row.tolist(), abs=1e-5)


def test_wrong_arguments_are_named(predictor, rows, tmp_path):
    path = DATA / "data" / rows[0].image_id
    with pytest.raises(InputError, match="2 images but 1 captions"):
        predictor.predict([path, path], ["a"])
    with pytest.raises(InputError, match="captions"):
        predictor.predict(path)
    with pytest.raises(InputError, match="empty"):
        predictor.predict(path, "  ")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(path.read_bytes()[:200])
    with pytest.raises(BadImagesError, match="image 0"):
        predictor.predict(broken, "a caption")
    with pytest.raises(BadImagesError, match="image 0"):
        predictor.predict(b"not an image", "a caption")
