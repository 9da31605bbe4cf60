"""`captag serve`: every endpoint, every kind of bad input (and that the server still answers),
micro-batching, and that /predict answers what Predictor.predict answers for the same bytes."""

import asyncio
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from captag.cli import main
from captag.data import read_records
from captag.errors import ConfigError, InputError
from captag.serve.app import Settings, create_app
from captag.serve.batcher import MicroBatcher
from captag.serve.model import ServedModel
from captag.serve.server import bind
from conftest import DATA, MINI

ROWS = read_records(MINI)[:4]
JPEG = (DATA / "data" / ROWS[0].image_id).read_bytes()


def png_of_size(width: int, height: int) -> bytes:
    """A tiny PNG file whose header claims width x height pixels (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b""))
            + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def served(frozen_run):
    return ServedModel.load(frozen_run)


@pytest.fixture(scope="module")
def client(served):
    with TestClient(create_app(served)) as client:
        yield client


def post(client, image=JPEG, caption="A skate park next to a body of water.", filename="photo.jpg"):
    return client.post("/predict", files={"image": (filename, image, "image/jpeg")},
                       data={"caption": caption})


def assert_same(result: dict, expected: dict, tolerance: float = 1e-4) -> None:
    assert result["labels"] == expected["labels"]
    assert result["threshold"] == expected["threshold"]
    assert result["probabilities"] == pytest.approx(expected["probabilities"], abs=tolerance)


# --- the endpoints ------------------------------------------------------------------------

def test_predict_answers_what_the_predictor_answers(client, served):
    for row in ROWS[:2]:
        data = (DATA / "data" / row.image_id).read_bytes()
        answer = post(client, data, row.caption)
        assert answer.status_code == 200, answer.text
        result = answer.json()
        assert set(result) == {"labels", "probabilities", "threshold", "caption_truncated", "time_ms"}
        assert len(result["probabilities"]) == 18 and result["time_ms"] > 0
        assert result["caption_truncated"] is False
        assert_same(result, served.predictor.predict(data, row.caption))


def test_batch_answers_each_item_in_order(client):
    files = [("images", (r.image_id, (DATA / "data" / r.image_id).read_bytes(), "image/jpeg"))
             for r in ROWS]
    answer = client.post("/predict/batch", files=files, data={"captions": [r.caption for r in ROWS]})
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert len(results) == len(ROWS)
    for (_, (_, data, _)), row, result in zip(files, ROWS, results):
        assert_same(result, post(client, data, row.caption).json())


def test_health_info_page_and_docs(client, served):
    assert post(client).status_code == 200
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["items"] >= health["batches"] > 0
    info = client.get("/info").json()
    assert {"model", "labels", "thresholds", "sizes", "provenance"} <= set(info)
    assert [label["name"] for label in info["labels"]] == list(served.labels.names)
    assert info["sizes"]["max_caption_tokens"] == 64 and info["limits"]["max_upload_mb"] == 10
    page = client.get("/")
    assert page.status_code == 200 and 'id="caption"' in page.text and "aria-live" in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    batch = schema["paths"]["/predict/batch"]["post"]
    assert "multipart/form-data" in batch["requestBody"]["content"]
    assert {"413", "415", "422"} <= set(schema["paths"]["/predict"]["post"]["responses"])


def test_an_overlong_caption_is_truncated_and_said_so(client, served):
    caption = "A dog runs after a red ball on the beach while children watch. " * 20
    result = post(client, caption=caption).json()
    assert result["caption_truncated"] is True
    assert_same(result, served.predictor.predict(JPEG, caption.strip()))


# --- bad input ----------------------------------------------------------------------------

BAD = {
    "not an image named .jpg": (dict(image=b"GIF? no, just text", filename="cat.jpg"), 415, "not an image"),
    "a script named .png": (dict(image=b"#!/bin/sh\nrm -rf /\n", filename="x.png"), 415, "not an image"),
    "an empty file": (dict(image=b""), 422, "image: the file is empty"),
    "a truncated JPEG": (dict(image=JPEG[: len(JPEG) // 2]), 422, "truncated"),
    "a decompression bomb": (dict(image=png_of_size(30000, 30000)), 422, "too large"),
    "a bomb under Pillow's error size": (dict(image=png_of_size(10000, 10000)), 422, "pixels"),
    "an empty caption": (dict(caption=""), 422, "caption"),
    "a blank caption": (dict(caption="   \n "), 422, "caption: the caption is empty"),
    "a client-named path": (dict(image=b"/etc/passwd", filename="/etc/passwd"), 415, "not an image"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_refused_and_the_server_keeps_serving(client, case):
    arguments, status, words = BAD[case]
    answer = post(client, **arguments)
    assert answer.status_code == status, answer.text
    assert words in answer.json()["detail"]
    assert post(client).status_code == 200


@pytest.mark.parametrize("files, data, words", [
    ({"file": ("a.jpg", JPEG, "image/jpeg")}, {"caption": "a bus"}, "field 'image' is missing"),
    ({"image": ("a.jpg", JPEG, "image/jpeg")}, {"text": "a bus"}, "field 'caption' is missing"),
    ({}, {"image": "/etc/passwd", "caption": "a bus"}, "field 'image'"),
])
def test_wrong_fields_are_named(client, files, data, words):
    answer = client.post("/predict", files=files or None, data=data)
    assert answer.status_code == 422 and words in answer.json()["detail"], answer.text


def test_a_caption_over_100_kb_is_refused_naming_the_field(client):
    answer = post(client, caption="a" * 200_000)
    assert answer.status_code == 413, answer.text
    assert "caption: 200 KB, over the 100 KB limit" in answer.json()["detail"]
    files = [("images", ("a.jpg", JPEG, "image/jpeg"))] * 2
    answer = client.post("/predict/batch", files=files, data={"captions": ["a bus", "a" * 2**20]})
    assert answer.status_code == 413 and "captions[1]: 1,049 KB" in answer.json()["detail"]
    assert post(client).status_code == 200


def test_bad_batches_are_refused(client):
    def batch(n_images, n_captions, image=JPEG):
        files = [("images", ("a.jpg", JPEG, "image/jpeg"))] * n_images
        files[min(1, n_images - 1)] = ("images", ("b.jpg", image, "image/jpeg"))
        return client.post("/predict/batch", files=files, data={"captions": ["a bus"] * n_captions})
    for answer, words in [(batch(65, 65), "at most 64"), (batch(3, 2), "3 images but 2 captions"),
                          (batch(3, 3, b"text"), "images[1]: not an image")]:
        assert answer.status_code in (415, 422) and words in answer.json()["detail"], answer.text
    blank = client.post("/predict/batch", files=[("images", ("a.jpg", JPEG))] * 3,
                        data={"captions": ["a bus", "a car", " "]})
    assert blank.status_code == 422 and "captions[2]: the caption is empty" in blank.json()["detail"]
    assert client.post("/predict/batch", files={"image": ("a.jpg", JPEG)},
                       data={"caption": "x"}).status_code == 422
    assert batch(64, 64).status_code == 200


def test_an_upload_over_the_limit_is_413_with_or_without_a_length(client):
    big = b"\xff" * (11 * 2**20)
    answer = post(client, image=big)
    assert answer.status_code == 413 and "10 MB upload limit" in answer.json()["detail"]
    head = b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n'
    chunks = (head if i == 0 else b"\xff" * 2**20 for i in range(12))
    answer = client.post("/predict", content=chunks,
                         headers={"content-type": "multipart/form-data; boundary=b"})
    assert answer.status_code == 413 and "upload limit" in answer.json()["detail"]
    assert post(client).status_code == 200


async def call(app, headers: list, chunks: int) -> tuple[dict, int]:
    """Send a POST /predict of `chunks` 1 MB chunks straight to the ASGI app: (the response's
    start message, chunks read)."""
    read, sent = 0, []
    head = b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n'

    async def receive():
        nonlocal read
        read += 1
        body = (head if read == 1 else b"") + b"\xff" * 2**20
        return {"type": "http.request", "body": body, "more_body": read < chunks}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": headers,
             "query_string": b"", "http_version": "1.1", "scheme": "http", "root_path": "",
             "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1)}
    await app(scope, receive, send)
    return sent[0], read


def test_an_upload_over_the_limit_is_drained_up_to_a_bound_then_answered(served):
    app = create_app(served, Settings(max_upload_mb=2))
    multipart = (b"content-type", b"multipart/form-data; boundary=b")
    huge = (b"content-length", b"1000000000")
    for headers in ([multipart, huge], [multipart]):
        start, read = asyncio.run(call(app, headers, 10))  # 10 MB: read to its end, so the
        assert (start["status"], read) == (413, 10)      # client reads the 413, not a reset
        assert (b"connection", b"close") not in start["headers"] or huge in headers
        start, read = asyncio.run(call(app, headers, 1000))  # 1 GB: cut off past 64 MB
        assert (start["status"], read) == (413, 64)
        assert (b"connection", b"close") in start["headers"]
    start, read = asyncio.run(call(app, [multipart, huge, (b"expect", b"100-continue")], 1000))
    assert (start["status"], read) == (413, 0)  # the client waits: nothing is read


# --- micro-batching -----------------------------------------------------------------------

class Counting(ServedModel):
    """The served model, recording the size of each prediction call and what it was given."""

    def __init__(self, model: ServedModel):
        super().__init__(model.predictor, model.source)
        self.calls, self.types = [], set()

    def predict(self, images, captions):
        self.calls.append(len(images))
        self.types.update(type(image) for image in images)
        return super().predict(images, captions)


def test_concurrent_requests_are_batched(served):
    counting = Counting(served)
    app = create_app(counting, Settings(max_batch_wait_ms=200))

    async def requests(n):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve") as http:
            return await asyncio.gather(*[
                http.post("/predict", files={"image": ("a.jpg", JPEG, "image/jpeg")},
                          data={"caption": f"A skate park, take {i}."}) for i in range(n)])
    answers = asyncio.run(requests(16))
    assert all(a.status_code == 200 for a in answers)
    assert sum(counting.calls) == 16 and len(counting.calls) < 16, counting.calls
    assert app.state.batcher.batches == len(counting.calls)
    assert counting.types == {Image.Image}  # images reach the model decoded, never as paths


class Failing(ServedModel):
    """A model that refuses a caption (as a predictor may) or fails (a bug)."""

    def predict(self, images, captions):
        if captions[0] == "refused":
            raise InputError("Caption 0 is refused.")
        raise RuntimeError("a bug")


def test_a_predictor_error_is_json(served):
    with TestClient(create_app(Failing(served.predictor)), raise_server_exceptions=False) as client:
        refused, failed = post(client, caption="refused"), post(client, caption="a bus")
    assert (refused.status_code, refused.json()["detail"]) == (422, "Caption 0 is refused.")
    assert failed.status_code == 500 and "RuntimeError" in failed.json()["detail"]


def test_the_batcher_joins_waits_and_passes_errors():
    calls = []

    def predict(images, captions):
        calls.append(list(images))
        if "bad" in captions:
            raise ValueError("bad batch")
        return [f"{i}:{c}" for i, c in zip(images, captions)]

    async def scenario():
        batcher = MicroBatcher(predict, max_batch=4, max_wait_s=0.05)
        joined = await asyncio.gather(*[batcher.submit([i], [str(i)]) for i in range(6)])
        start = time.perf_counter()
        alone = await batcher.submit([9], ["9"])
        waited = time.perf_counter() - start
        with pytest.raises(ValueError, match="bad batch"):
            await batcher.submit([1, 2], ["ok", "bad"])
        await batcher.close()
        return joined, alone, waited

    joined, alone, waited = asyncio.run(scenario())
    assert joined == [[f"{i}:{i}"] for i in range(6)] and alone == ["9:9"]
    assert [len(c) for c in calls[:2]] == [4, 2]
    assert 0.04 < waited < 1.0


# --- the command ----------------------------------------------------------------------------

def test_serve_refuses_a_bad_folder_or_setting_in_one_line(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["serve", str(tmp_path), "--port", "70000"]) == 2
    assert "--port 70000" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "--max-upload-mb", "0"]) == 2
    with bind("127.0.0.1", 0) as taken, pytest.raises(ConfigError, match="Cannot listen"):
        bind("127.0.0.1", taken.getsockname()[1])


def raw_post(url: str, headers: bytes) -> bytes:
    """The server's answer to a POST /predict of these headers and no body yet."""
    host, port = url.split("//")[1].strip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data;"
                           b" boundary=b\r\n" + headers + b"\r\n\r\n")
        return connection.recv(4096)


def multipart(image_mb: float = 0, caption_mb: float = 0) -> bytes:
    """A /predict form body whose caption and image hold that many MB."""
    caption = b"a" * int(caption_mb * 2**20 + 7)
    image = b"\xff" * int(image_mb * 2**20)
    return (b'--b\r\nContent-Disposition: form-data; name="caption"\r\n\r\n' + caption
            + b'\r\n--b\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n'
            + b"Content-Type: image/jpeg\r\n\r\n" + image + b"\r\n--b--\r\n")


def over_the_limit(url: str, body: bytes) -> dict[str, tuple[int, str]]:
    """{client: (status, text)} that urllib, requests and curl (where installed) each read
    for `body`; a connection reset fails the test."""
    import urllib.error
    import urllib.request

    import requests
    kind = {"Content-Type": "multipart/form-data; boundary=b"}
    try:
        urllib.request.urlopen(urllib.request.Request(url, data=body, headers=kind), timeout=60)
        answers = {"urllib": (200, "")}
    except urllib.error.HTTPError as error:
        answers = {"urllib": (error.code, error.read().decode())}
    answer = requests.post(url, data=body, headers=kind, timeout=60)
    answers["requests"] = answer.status_code, answer.text
    if shutil.which("curl"):
        answers["curl"] = _curl(url, body, {**kind, "Expect": ""})
        answers["curl waiting for 100-continue"] = _curl(url, body, kind)
    return answers


def _curl(url: str, body: bytes, headers: dict) -> tuple[int, str]:
    """What curl reads for `body` (an empty header value drops curl's own header)."""
    with tempfile.NamedTemporaryFile() as file:
        file.write(body)
        file.flush()
        done = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}",
                               *[f"-H{k}: {v}" if v else f"-H{k}:" for k, v in headers.items()],
                               "--data-binary", f"@{file.name}", url],
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    text, _, status = done.stdout.rpartition("\n")
    return int(status), text


@pytest.mark.slow
def test_captag_serve_answers_over_http(frozen_run):
    server = subprocess.Popen([sys.executable, "-m", "captag.cli", "serve", str(frozen_run),
                               "--port", "0", "--max-upload-mb", "1"],
                              stderr=subprocess.PIPE, text=True)
    try:
        line = server.stderr.readline()
        assert "serving" in line, line
        url = line.split(" at ")[1].split()[0]
        with httpx.Client(base_url=url, timeout=60) as http:
            assert http.get("health").json()["status"] == "ok"
            image = {"image": ("a.jpg", JPEG, "image/jpeg")}
            assert http.post("predict", files=image, data={"caption": "A park."}).status_code == 200
            assert b"413" in raw_post(url, b"Content-Length: 2000000\r\nExpect: 100-continue")
            assert http.get("health").status_code == 200
            for body, words in [(multipart(image_mb=2), "1 MB upload limit"),
                                (multipart(image_mb=4), "1 MB upload limit"),
                                (multipart(caption_mb=50), "caption: 50.0 MB of text")]:
                for client, (status, text) in over_the_limit(url + "predict", body).items():
                    waited = client.endswith("100-continue")  # it sent no body: none to name
                    expected = "1 MB upload limit" if waited else words
                    assert status == 413 and expected in text, (client, status, text)
                answer = http.post("predict", files=image, data={"caption": "A park."})
                assert answer.status_code == 200
    finally:
        server.terminate()
        server.wait(30)


def test_an_exported_folder_is_served_and_answers_as_its_runtime(frozen_run, tmp_path):
    from captag.deploy.export import export_run
    from captag.deploy.runtime import ExportedPredictor
    export_run(frozen_run, tmp_path / "export")
    served = ServedModel.load(tmp_path / "export")
    with TestClient(create_app(served)) as client:
        answer = post(client)
        assert answer.status_code == 200
        assert client.get("/info").json()["format"].startswith("captag-export")
    expected = ExportedPredictor.load(tmp_path / "export").predict(JPEG, "A skate park next to a body of water.")
    assert_same(answer.json(), expected)
