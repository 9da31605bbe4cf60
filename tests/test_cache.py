"""The feature cache: hits, misses, invalidation, and two processes filling it at once."""

import multiprocessing as mp

import numpy as np
import pytest
import torch

from captag.training.cache import ArrayFile, FeatureCache


def filled(name: str, values):
    """A `compute` that writes `values` as the entry's array `name`."""
    values = np.asarray(values)

    def compute(entry):
        entry.array(name, values.shape, values.dtype)[:] = values
    return compute


def mapped_file(tensor: torch.Tensor) -> str:
    """The file whose memory map holds `tensor`'s data ("" if none)."""
    address = tensor.data_ptr()
    for line in open("/proc/self/maps"):
        parts = line.split(maxsplit=5)
        low, high = (int(a, 16) for a in parts[0].split("-"))
        if low <= address < high:
            return parts[5].strip() if len(parts) > 5 else ""
    return ""


def _fill(root, queue):
    cache = FeatureCache(root)
    out = cache.get_or_compute({"kind": "t", "name": "x"}, ["a", "b"], filled("v", np.arange(4.0)))
    queue.put((cache.hits, cache.misses, out["v"].tolist()))


def test_hit_after_miss(tmp_path):
    cache = FeatureCache(tmp_path)
    calls = []

    def compute(entry):
        calls.append(1)
        entry.array("v", (3, 2), np.float16)[:] = 1
    spec = {"kind": "image", "name": "enc", "cut": 3}
    first = cache.get_or_compute(spec, ["h1", "h2", "h3"], compute)
    second = cache.get_or_compute(spec, ["h1", "h2", "h3"], compute)
    assert len(calls) == 1 and (cache.hits, cache.misses) == (1, 1)
    assert torch.equal(first["v"], torch.ones(3, 2, dtype=torch.float16))
    assert torch.equal(first["v"], second["v"])


def test_any_change_invalidates(tmp_path):
    cache = FeatureCache(tmp_path)
    spec = {"kind": "image", "name": "enc", "cut": 3, "weights": "w1"}
    cache.get_or_compute(spec, ["h1", "h2"], filled("v", np.zeros(2)))
    cache.get_or_compute(spec, ["h1", "h2-changed"], filled("v", np.zeros(2)))
    cache.get_or_compute({**spec, "weights": "w2"}, ["h1", "h2"], filled("v", np.zeros(2)))
    cache.get_or_compute({**spec, "cut": 4}, ["h1", "h2"], filled("v", np.zeros(2)))
    assert (cache.hits, cache.misses) == (0, 4)


def test_two_processes_fill_once(tmp_path):
    context = mp.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_fill, args=(str(tmp_path), queue)) for _ in range(2)]
    for w in workers:
        w.start()
    results = [queue.get(timeout=120) for _ in workers]
    for w in workers:
        w.join()
    assert sorted((hits, misses) for hits, misses, _ in results) == [(0, 1), (1, 0)]
    assert all(values == [0.0, 1.0, 2.0, 3.0] for _, _, values in results)
    assert not list(tmp_path.rglob("*.tmp"))


def test_images_are_keyed_by_content_not_by_name(tmp_path):
    """Two datasets that both hold 0.jpg: the same name with other pixels is another key; the
    same pixels under another name is the same key."""
    import shutil

    from conftest import DATA
    from captag.training.features import file_hashes
    for folder, source in (("a", "9.jpg"), ("b", "26.jpg"), ("c", "9.jpg")):
        (tmp_path / folder).mkdir()
        shutil.copy(DATA / "data" / source, tmp_path / folder / "0.jpg")
    shutil.copy(DATA / "data" / "9.jpg", tmp_path / "c" / "other.jpg")
    a, b, c, other = file_hashes([tmp_path / "a" / "0.jpg", tmp_path / "b" / "0.jpg",
                                  tmp_path / "c" / "0.jpg", tmp_path / "c" / "other.jpg"])
    assert a != b and a == c == other
    cache = FeatureCache(tmp_path / "cache")
    spec = {"kind": "image", "name": "enc"}
    assert cache.key(spec, [a]) != cache.key(spec, [b])


def test_the_feature_pass_streams_into_memory_maps_equal_to_each_row_alone(tmp_path):
    """Activations of 40 rows, written batch by batch into the entry's arrays and read back as
    memory maps, equal each row's own activations (text: its token states, stored without
    padding and padded with zeros to the longest of a batch, with their mask)."""
    from conftest import MINI, frozen_config
    from captag.data import read_records
    from captag.models.registry import model_from_config
    from captag.training.features import image_activations, text_activations
    records = read_records(MINI)[:40]
    cfg = frozen_config(tmp_path, image_size=64, image_trainable=2, text_trainable=2)
    model = model_from_config(cfg).eval()
    cache = FeatureCache(tmp_path)
    images = image_activations(model, records, MINI.parent / "data", 64, cache, batch_size=16,
                               num_workers=0, progress=False)
    text = text_activations(model, [r.caption for r in records], cache, batch_size=16,
                            progress=False)
    states = text["text_states"]
    for tensor in (images, states.flat, states.offsets):
        assert mapped_file(tensor).endswith(".npy")
    assert not list(tmp_path.rglob("*.tmp"))

    from captag.data.dataset import CaptionedImages
    from captag.data.transforms import build_transform
    encoder = model.image
    transform = build_transform(64, encoder.mean, encoder.std, train=False)
    one = CaptionedImages(records, MINI.parent / "data", transform)[7]["image"][None]
    with torch.inference_mode():
        expected = encoder.lower(one, model.image_cut).to(torch.float16)[0]
    assert torch.allclose(images[7].float(), expected.float(), atol=2e-2)

    caption = records[7].caption
    tokens = model.text.tokenize([caption])
    n = int(tokens["attention_mask"].sum())
    with torch.inference_mode():
        expected = model.text.lower(tokens["input_ids"], tokens["attention_mask"], model.text_cut)
    assert torch.allclose(states[7]["text_states"].float(), expected[0].half().float(), atol=1e-2)
    batch = states[torch.tensor([3, 7, 12])]
    longest = int(batch["attention_mask"].sum(1).max())
    assert batch["text_states"].shape[:2] == (3, longest) and longest >= n
    assert torch.equal(batch["text_states"][1, :n], states[7]["text_states"])
    assert not batch["text_states"][1, n:].any()
    assert batch["attention_mask"][1].tolist() == [1] * n + [0] * (longest - n)

    from captag.data.dataset import CachedFeatures, Collate
    rows = CachedFeatures({"text_states": states})
    by_item = Collate()([rows[i] for i in (3, 7, 12)])
    by_column = Collate()(rows.columns([3, 7, 12]))
    for key in ("text_states", "attention_mask", "index"):
        assert torch.equal(by_item[key], by_column[key]), key


def test_arrays_are_written_by_rows_through_the_file(tmp_path):
    path = tmp_path / "a.npy"
    array = ArrayFile(path, (5, 2, 3), np.float16)
    rows = np.arange(30, dtype=np.float32).reshape(5, 2, 3)
    array[3:5] = rows[3:5]  # any order; rows never written stay zero
    array[[1, 0]] = rows[[1, 0]]
    with pytest.raises(ValueError, match="contiguous rows"):
        array[0:4:2] = rows[0:4:2]
    array.close()
    expected = rows.astype(np.float16)
    expected[2] = 0
    assert np.array_equal(np.load(path), expected) and len(array) == 5
    assert str(path) not in open("/proc/self/maps").read()  # written, not mapped
