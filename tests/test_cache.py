"""The feature cache: hits, misses, invalidation, and two processes filling it at once."""

import multiprocessing as mp

import torch

from captag.training.cache import FeatureCache


def _fill(root, queue):
    cache = FeatureCache(root)
    out = cache.get_or_compute({"kind": "t", "name": "x"}, ["a", "b"],
                               lambda: {"v": torch.arange(4.0)})
    queue.put((cache.hits, cache.misses, out["v"].tolist()))


def test_hit_after_miss(tmp_path):
    cache = FeatureCache(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return {"v": torch.ones(3, 2)}
    spec = {"kind": "image", "name": "enc", "cut": 3}
    first = cache.get_or_compute(spec, ["h1", "h2", "h3"], compute)
    second = cache.get_or_compute(spec, ["h1", "h2", "h3"], compute)
    assert len(calls) == 1 and (cache.hits, cache.misses) == (1, 1)
    assert torch.equal(first["v"], second["v"])


def test_any_change_invalidates(tmp_path):
    cache = FeatureCache(tmp_path)
    spec = {"kind": "image", "name": "enc", "cut": 3, "weights": "w1"}
    cache.get_or_compute(spec, ["h1", "h2"], lambda: {"v": torch.zeros(2)})
    cache.get_or_compute(spec, ["h1", "h2-changed"], lambda: {"v": torch.zeros(2)})
    cache.get_or_compute({**spec, "weights": "w2"}, ["h1", "h2"], lambda: {"v": torch.zeros(2)})
    cache.get_or_compute({**spec, "cut": 4}, ["h1", "h2"], lambda: {"v": torch.zeros(2)})
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
