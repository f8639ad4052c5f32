"""cris-export --triton-repository: every config.pbtxt parses as Triton's ModelConfig and its
tensors are the bundle's graphs' (read from the ONNX files written); the Python model's BLS
pipeline, its graph runs given to ONNX Runtime on the repository's own files, answers as the
Segmenter does. The full Triton container (TensorRT, ONNX Runtime backends) does not run here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc", reason="the [serve] extra (tritonclient) is not installed")

from google.protobuf import text_format  # noqa: E402
from tritonclient.grpc import model_config_pb2  # noqa: E402

from cris_edge.cli.export import main as cris_export  # noqa: E402
from cris_edge.serve import wire  # noqa: E402
from cris_edge.serve.triton_bls import GRAPH_MODELS, segmenter_from_parameters  # noqa: E402
from cris_edge.serve.triton_model import answer, model_parameters  # noqa: E402

ONNX_TYPES = {1: "TYPE_FP32", 10: "TYPE_FP16", 6: "TYPE_INT32", 7: "TYPE_INT64", 9: "TYPE_BOOL"}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    from cris_edge.demo.defaults import demo_bundle

    return demo_bundle(cache=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def repository(bundle, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("triton") / "models"
    assert cris_export(["--bundle", str(bundle), "--triton-repository", str(out), "--triton-instances", "2"]) == 0
    return out


def _config(path: Path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.mark.slow
def test_every_config_parses_and_matches_its_graph(repository, bundle):
    import onnx

    assert sorted(p.name for p in repository.iterdir()) == sorted([wire.MODEL_NAME, *GRAPH_MODELS.values()])
    for graph, name in GRAPH_MODELS.items():
        config = _config(repository / name / "config.pbtxt")
        assert config.name == name and config.platform == "onnxruntime_onnx" and config.max_batch_size == 8
        assert config.instance_group[0].count == 2 and config.HasField("dynamic_batching")
        model = onnx.load(str(repository / name / "1" / "model.onnx"), load_external_data=False)
        for declared, actual in ((config.input, model.graph.input), (config.output, model.graph.output)):
            got = [(t.name, model_config_pb2.DataType.Name(t.data_type), list(t.dims)) for t in declared]
            want = [(t.name, ONNX_TYPES[t.type.tensor_type.elem_type],
                     [d.dim_value if d.HasField("dim_value") else -1 for d in t.type.tensor_type.shape.dim[1:]])
                    for t in actual]
            assert got == want, name
        assert (repository / name / "1" / "model.onnx").read_bytes() == \
            (bundle / json.loads((bundle / "config.json").read_text())["graphs"][graph]["onnx"]).read_bytes()
    cris = _config(repository / wire.MODEL_NAME / "config.pbtxt")
    assert cris.backend == "python" and cris.instance_group[0].count == 2
    assert [(t.name, model_config_pb2.DataType.Name(t.data_type), tuple(t.dims)) for t in cris.input] == \
        [(s.name, f"TYPE_{s.triton_dtype}", s.shape) for s in wire.INPUTS]
    assert [t.name for t in cris.output] == [s.name for s in wire.OUTPUTS]
    assert "triton_bls import TritonPythonModel" in (repository / wire.MODEL_NAME / "1" / "model.py").read_text()


@pytest.mark.slow
def test_the_python_model_answers_as_the_segmenter(repository, bundle):
    import cv2
    import onnxruntime as ort

    from cris_edge import Segmenter
    from cris_edge.data.synthetic import make_sample

    config = _config(repository / wire.MODEL_NAME / "config.pbtxt")
    params = model_parameters({"parameters": {k: {"string_value": v.string_value}
                                              for k, v in config.parameters.items()}})
    sessions = {g: ort.InferenceSession(str(repository / m / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
                for g, m in GRAPH_MODELS.items()}
    calls = []

    def run(graph, feeds, outputs):
        calls.append((graph, len(next(iter(feeds.values())))))
        return sessions[graph].run(list(outputs), feeds)

    served = segmenter_from_parameters(params, str(repository / wire.MODEL_NAME / "1"), run)
    frames = [cv2.resize(make_sample(60 + i).image, (160, 120)) for i in range(3)]
    prompts = [make_sample(60 + i).sentences[:2] for i in range(3)]
    requests = [{"frame": f[None], "text": wire.encode_texts(p)[None]} for f, p in zip(frames, prompts)]
    with Segmenter(bundle, "onnxruntime") as reference:
        for frame, texts, response in zip(frames, prompts, answer(served, requests, int(params["max_frame_pixels"]))):
            want = reference.run(frame, texts)
            assert all(np.array_equal(response["mask"][0, i], w.mask) for i, w in enumerate(want))
    assert ("visual", 3) in calls  # the three frames' visual graph in one batch


def test_the_repository_needs_its_bundle_and_a_new_directory(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("user data")
    assert cris_export(["--triton-repository", str(tmp_path / "new")]) == 2
    assert "--bundle BUNDLE" in capsys.readouterr().err
    assert cris_export(["--bundle", str(tmp_path), "--triton-repository", str(tmp_path / "taken")]) == 2
    assert "refusing to replace it" in capsys.readouterr().err
    assert (tmp_path / "taken" / "mine.txt").read_text() == "user data"
