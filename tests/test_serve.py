"""cris-serve: the wire format, the Python-backend model's logic on a real Segmenter, the model
config Triton parses, and (slow) a real Triton server on loopback ports queried over HTTP and
gRPC by several clients at once, refusing bad requests while serving good ones, stopping cleanly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cris_edge.serve import wire
from cris_edge.serve.repository import ModelSettings, model_config
from cris_edge.serve.triton_model import answer, check_request, model_parameters

PROMPTS = ["the red circle", "a blue square on the left"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """The shipped demo model's FP32 bundle (trained: its masks are not empty)."""
    from cris_edge.demo.defaults import demo_bundle

    return demo_bundle(cache=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def segmenter(bundle):
    from cris_edge import Segmenter

    with Segmenter(bundle, "onnxruntime") as s:
        yield s


def _frames(n: int, seed: int = 0, size=(96, 128)) -> list[np.ndarray]:
    """``n`` synthetic scenes (BGR) resized to ``size`` (height, width): the model finds objects."""
    import cv2

    from cris_edge.data.synthetic import make_sample

    return [cv2.resize(make_sample(seed + i).image, size[::-1]) for i in range(n)]


def _request(frame: np.ndarray, texts) -> dict[str, np.ndarray]:
    return {"frame": frame[None], "text": wire.encode_texts(texts)[None]}


# -- the wire format and the model's logic, no server --------------------------------------------------
def test_prompts_survive_the_wire_and_bad_ones_are_named():
    texts = ["the red circle", "ünïcode café", "x" * 200]
    tensor = wire.encode_texts(texts)
    assert tensor.dtype == np.uint8 and tensor.size % wire.TEXT_QUANTUM == 0
    assert wire.decode_texts(tensor) == texts
    for data, words in [(b"", "no prompt"), (b"ok\0  \0", r"text\[1\] is empty"), (b"\xff\xfe\0", "not valid UTF-8")]:
        with pytest.raises(ValueError, match=words):
            wire.decode_texts(np.frombuffer(data, np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        wire.decode_texts(np.zeros(4, np.int32))
    with pytest.raises(ValueError, match="NUL"):
        wire.check_no_nul(["a\0b"])


def test_check_request_names_each_problem():
    frame = np.zeros((1, 8, 8, 3), np.uint8)
    text = wire.encode_texts(["a dog"])[None]
    assert [(f.shape, p) for f, p in check_request(frame, text, 64)] == [((8, 8, 3), ["a dog"])]
    with pytest.raises(ValueError, match="exceeds this server's limit of 63 pixels"):
        check_request(frame, text, 63)
    with pytest.raises(ValueError, match=r"uint8 \[H, W, 3\]"):
        check_request(frame.astype(np.float32), text, 64)
    with pytest.raises(ValueError, match="one uint8"):
        check_request(frame, np.concatenate([text, text]), 64)
    two = np.stack([wire.encode_texts(["a"]), wire.encode_texts(["b", "c"])[:wire.TEXT_QUANTUM]])
    with pytest.raises(ValueError, match="same number of prompts"):
        check_request(np.zeros((2, 8, 8, 3), np.uint8), two, 64)


def test_a_batch_of_requests_gets_the_segmenters_masks_and_a_bad_one_only_its_error(segmenter):
    frames = _frames(3, size=(96, 128)) + _frames(1, seed=9, size=(120, 90))
    prompts = [PROMPTS, [PROMPTS[1]], [PROMPTS[0]], PROMPTS]
    requests = [_request(f, p) for f, p in zip(frames, prompts)]
    requests.insert(2, {"frame": frames[0][None], "text": np.zeros((1, 64), np.uint8)})  # no prompt
    responses = answer(segmenter, requests, 10 ** 6)
    assert isinstance(responses[2], ValueError) and "no prompt" in str(responses[2])
    served = responses[:2] + responses[3:]
    for frame, texts, response in zip(frames, prompts, served):
        want = segmenter.run(frame, texts)
        assert any(r.mask.any() for r in want)
        assert response["mask"].shape == (1, len(texts), *frame.shape[:2])
        for i, r in enumerate(want):
            assert np.array_equal(response["mask"][0, i], r.mask)
            assert response["score"][0, i] == pytest.approx(r.score, abs=1e-6)
        assert response["batch"][0, 0] == 5 and response["ms"].shape == (1, len(wire.MS_KEYS))
    assert all(isinstance(r, ValueError) for r in answer(segmenter, requests[2:3], 10 ** 6))


def test_run_many_matches_run(segmenter):
    frames = _frames(2) + _frames(1, seed=5, size=(70, 200))
    texts = ["a dog", PROMPTS, [PROMPTS[1]]]
    for frame, t, got in zip(frames, texts, segmenter.run_many(frames, texts)):
        want = segmenter.run(frame, t if isinstance(t, list) else [t])
        assert [g.text for g in got] == [w.text for w in want]
        assert all(np.array_equal(g.mask, w.mask) for g, w in zip(got, want))
    with pytest.raises(ValueError, match="one str or list of str per frame"):
        segmenter.run_many(frames, ["a dog"])


def test_the_model_config_parses_as_tritons_and_matches_the_wire():
    pytest.importorskip("tritonclient.grpc", reason="the [serve] extra (tritonclient) is not installed")
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    settings = ModelSettings(engine=Path("b \"q\""), max_batch=4, instances=3, threads=1)
    config = text_format.Parse(model_config(settings), model_config_pb2.ModelConfig())
    assert config.name == wire.MODEL_NAME and config.backend == "python" and config.max_batch_size == 4
    assert config.instance_group[0].count == 3 and config.dynamic_batching.max_queue_delay_microseconds == 2000
    for tensors, specs in ((config.input, wire.INPUTS), (config.output, wire.OUTPUTS)):
        assert [(t.name, model_config_pb2.DataType.Name(t.data_type), tuple(t.dims)) for t in tensors] == \
            [(s.name, f"TYPE_{s.triton_dtype}", s.shape) for s in specs]
    as_json = {"parameters": {k: {"string_value": v.string_value} for k, v in config.parameters.items()}}
    params = model_parameters(json.loads(json.dumps(as_json)))
    assert params["engine"] == str(Path('b "q"').resolve()) and params["threads"] == "1"


def test_the_server_environment_puts_this_interpreters_libpython_first(tmp_path):
    import sysconfig

    from cris_edge.serve.server import server_environment

    env = server_environment(tmp_path, {"LD_LIBRARY_PATH": "/x:/y", "PATH": "/bin"})
    assert env["LD_LIBRARY_PATH"].split(os.pathsep) == [sysconfig.get_config_var("LIBDIR"), str(tmp_path), "/x", "/y"]
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)


def test_client_urls_are_checked():
    pytest.importorskip("tritonclient.http", reason="the [serve] extra (tritonclient) is not installed")
    from cris_edge.serve import Client

    for url in ("localhost:8000", "ftp://h:1", "http://", "grpc://h:1/path"):
        with pytest.raises(ValueError, match="server URL"):
            Client(url)


# -- a real server -------------------------------------------------------------------------------------
def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def server(bundle, tmp_path_factory):
    """cris-serve on free loopback ports (2 instances, frames up to 200x200), its process and URLs."""
    from cris_edge.serve.server import missing_serving

    if missing_serving():
        pytest.skip(f"the Triton server is not installed: {missing_serving()}")
    ports = _free_ports(3)
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cris_edge.cli.serve", "--engine", str(bundle),
                                 "--http-port", str(ports[0]), "--grpc-port", str(ports[1]),
                                 "--metrics-port", str(ports[2]), "--instances", "2", "--max-frame-pixels",
                                 str(200 * 200), "--threads", "1"], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while "serving model cris" not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.5)
    yield proc, {"http": f"http://127.0.0.1:{ports[0]}", "grpc": f"grpc://127.0.0.1:{ports[1]}"}, ports, log
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["http", "grpc"])
def test_the_server_gives_the_segmenters_masks(server, segmenter, scheme):
    from cris_edge.serve import Client

    _, urls, _, _ = server
    found = 0
    with Client(urls[scheme]) as client:
        for frame in _frames(2, seed=20) + _frames(1, seed=30, size=(150, 100)):
            got, want = client.run(frame, PROMPTS), segmenter.run(frame, PROMPTS)
            found += sum(int(w.mask.any()) for w in want)
            for g, w in zip(got, want):
                assert g.text == w.text and np.array_equal(g.mask, w.mask)
                assert g.score == pytest.approx(w.score, abs=1e-6)
                assert set(wire.MS_KEYS) == set(g.timings)
        one = client.run(frame, PROMPTS[0])  # one str: one result, as Segmenter.run
        assert np.array_equal(one.mask, want[0].mask)
    assert found  # not only empty masks compared


@pytest.mark.slow
def test_concurrent_clients_get_their_own_results(server, segmenter):
    from cris_edge.serve import Client

    _, urls, _, _ = server
    jobs = [(urls["http" if i % 2 else "grpc"], _frames(1, seed=100 + i)[0], [PROMPTS[i % 2], f"object number {i}"])
            for i in range(6)]
    expected = [segmenter.run(frame, texts) for _, frame, texts in jobs]
    failures, batches = [], []

    def work(i: int) -> None:
        url, frame, texts = jobs[i]
        with Client(url) as client:
            for _ in range(4):
                got = client.run(frame, texts)
                batches.append(client.last_batch)
                if [g.text for g in got] != texts or not all(
                        np.array_equal(g.mask, w.mask) for g, w in zip(got, expected[i])):
                    failures.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures and len(batches) == 24 and min(batches) >= 1


@pytest.mark.slow
def test_bad_requests_are_refused_and_good_ones_still_served(server, segmenter):
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    from cris_edge.serve import Client

    _, urls, ports, _ = server
    frame = _frames(1, seed=40)[0]
    want = segmenter.run(frame, PROMPTS[0])
    raw = httpclient.InferenceServerClient(f"127.0.0.1:{ports[0]}")

    def send(frame_array, text_array):
        inputs = []
        for name, array in (("frame", frame_array), ("text", text_array)):
            tensor = httpclient.InferInput(name, list(array.shape), "FP32" if array.dtype == np.float32 else "UINT8")
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        return raw.infer("cris", inputs)

    bad = [(frame[None].astype(np.float32), wire.encode_texts(["a"])[None], "FP32"),
           (frame[None, ..., :2].copy(), wire.encode_texts(["a"])[None], "frame"),
           (frame[None], np.zeros((1, 64), np.uint8), "no prompt"),
           (np.zeros((1, 300, 300, 3), np.uint8), wire.encode_texts(["a"])[None], "exceeds this server's limit")]
    with Client(urls["grpc"]) as client:
        for frame_array, text_array, words in bad:
            with pytest.raises(InferenceServerException, match=words):
                send(frame_array, text_array)
            assert np.array_equal(client.run(frame, PROMPTS[0]).mask, want.mask)
        with pytest.raises(ValueError, match="exceeds this server's limit of 40000 pixels"):
            client.run(np.zeros((300, 300, 3), np.uint8), "a dog")
        with pytest.raises(ValueError, match="empty"):
            client.run(frame, ["a dog", " "])
    raw.close()


@pytest.mark.slow
def test_predict_on_the_server_writes_the_segmenters_masks(server, segmenter, tmp_path, capsys):
    import cv2

    from cris_edge.cli.predict import main as cris_predict

    _, urls, _, _ = server
    image = tmp_path / "scene.png"
    cv2.imwrite(str(image), _frames(1, seed=50)[0])
    assert cris_predict(["--server", urls["http"], "--source", str(image), "--text", PROMPTS[0],
                         "--output", str(tmp_path / "out")]) == 0
    assert f"on server {urls['http']}" in capsys.readouterr().out
    record = json.loads((tmp_path / "out" / "predictions.jsonl").read_text())
    mask = cv2.imread(str(tmp_path / "out" / record["mask"]), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(mask > 0, segmenter.run(cv2.imread(str(image)), PROMPTS[0]).mask.astype(bool))
    assert cris_predict(["--server", urls["http"], "--engine", "x", "--source", str(image), "--text", "a",
                         "--output", str(tmp_path / "o2")]) == 2


def _free_run(n: int) -> int:
    """A port p with p .. p + n - 1 all free on loopback."""
    for _ in range(50):
        start = _free_ports(1)[0]
        if start + n < 65536 and not any(_listening(start + k) for k in range(n)):
            return start
    raise RuntimeError("no run of free ports found")


@pytest.mark.slow
def test_the_load_test_reports_no_errors(bundle, tmp_path):
    """benchmarks/serve.py, small: rows for 2 clients and the mixed sizes, the three faults, no errors."""
    from cris_edge.serve.server import missing_serving

    if missing_serving():
        pytest.skip(f"the Triton server is not installed: {missing_serving()}")
    out = tmp_path / "serve.json"
    run = subprocess.run([sys.executable, str(Path(__file__).resolve().parent.parent / "benchmarks" / "serve.py"),
                          "--engine", str(bundle), "--clients", "2", "--requests", "2", "--size", "96x128",
                          "--base-port", str(_free_run(3)), "--json", str(out)],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [r["clients"] for r in result["rows"]] == ["in-process Segmenter", 2, "4 (96x128 and 192x256)"]
    assert all(r["errors"] == 0 for r in result["rows"]) and result["rows"][1]["requests"] == 4
    assert [f["server_still_correct"] for f in result["faults"]] == [True, True, True]
    assert "| 2 | 4 |" in run.stdout


@pytest.mark.slow
def test_zz_the_server_stops_cleanly(server):
    """Last in the file (the module's server ends here): SIGTERM -> exit 0, ports freed, no Triton left."""
    proc, _, ports, log = server
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0, log.read_text()[-2000:]
    assert "cris-serve: stopped" in log.read_text()
    assert not [p for p in ports if _listening(p)]
    found = subprocess.run(["pgrep", "-f", f"--http-port={ports[0]}"], capture_output=True, text=True).stdout
    assert not found.strip()
