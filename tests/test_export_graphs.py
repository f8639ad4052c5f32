"""ONNX graphs of the deployment split: parity with PyTorch, the deployment rules, TensorRT op
coverage, FP16 and INT8 conversion (cris_edge.export). A randomly initialised cris_tiny is
exported once per module (about 15 s on 2 CPU cores)."""

from __future__ import annotations

import logging
import threading
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from cris_edge.data.synthetic import HELD_OUT_SEED_OFFSET, make_sample
from cris_edge.export import fp16, int8, plugin
from cris_edge.export.calibration import CalibrationSpec, graph_feeds, pairs
from cris_edge.export.checks import (GraphCheckError, check_graph, op_census, rule_problems, tensor_types,
                                     tensorrt_ops, tensorrt_problems)
from cris_edge.export.graphs import GRAPH_NAMES, OPSET, SPECS, export_graph
from cris_edge.export.quiet import ROOT, quiet_loggers
from cris_edge.kernels.reference import sim_upsample, similarity_logits
from cris_edge.model import build_cris
from cris_edge.runtime.postprocess import logits_to_mask, logits_to_prob, mask_iou
from cris_edge.runtime.preprocess import preprocess
from cris_edge.tokenizer import get_tokenizer

TEXTS = ["the red circle on the left", "a small blue box", "the largest star left of the green disk"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_cris("cris_tiny").eval()


@pytest.fixture(scope="module")
def graphs(model):
    return {name: export_graph(model, name) for name in GRAPH_NAMES}


def _session(graph: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])


def _scenes(n: int, size: int, length: int):
    """``(images float32 [n, 3, S, S], TokenBatch)`` of held-out synthetic scenes."""
    samples = [make_sample(HELD_OUT_SEED_OFFSET + i) for i in range(n)]
    images = np.concatenate([preprocess(s.image, size).image for s in samples])
    return images, get_tokenizer().batch([s.sentences[0] for s in samples], length), samples


def _run_chain(sessions, images, tokens, dtype=np.float32):
    word, state = sessions["text"].run(None, {"tokens": tokens.tokens, "eot_index": tokens.eot_index})
    c3, c4, c5 = sessions["visual"].run(None, {"image": images.astype(dtype)})
    (logits,) = sessions["head"].run(None, {"c3": c3, "c4": c4, "c5": c5, "word": word,
                                             "pad_mask": tokens.pad_mask, "state": state})
    return logits.astype(np.float32)


@pytest.mark.parametrize("name", GRAPH_NAMES)
def test_graph_passes_checker_rules_and_tensorrt_coverage(graphs, name):
    graph = graphs[name]
    onnx.checker.check_model(graph, full_check=True)
    assert graph.opset_import[0].version == OPSET >= 17
    assert [i.name for i in graph.graph.input] == list(SPECS[name].inputs)
    assert [o.name for o in graph.graph.output] == list(SPECS[name].outputs)
    check_graph(graph, name)  # rules + every op in TensorRT's ONNX parser list


def test_input_dtypes_come_from_the_tokenizer(graphs):
    types = {i.name: i.type.tensor_type.elem_type for g in graphs.values() for i in g.graph.input}
    assert types["tokens"] == types["eot_index"] == TensorProto.INT32
    assert types["pad_mask"] == TensorProto.BOOL
    census = {op for g in graphs.values() for op in op_census(g)}
    assert not census & {"ArgMax", "ArgMin", "Equal"}


def test_dynamic_conv_has_no_batch_dependent_conv(graphs):
    head = graphs["head"]
    weights = {init.name for init in head.graph.initializer}
    convs = [n for n in head.graph.node if n.op_type == "Conv"]
    assert convs and all(n.input[1] in weights for n in convs)
    assert all(a.i == 1 for n in convs for a in n.attribute if a.name == "group")
    assert any(n.op_type == "MatMul" for n in head.graph.node)  # the per-sample taps as a batched matmul


def test_shape_only_constants_are_baked(graphs):
    visual_ops = op_census(graphs["visual"])
    assert "Resize" not in visual_ops  # the attention pool's bicubic positions are an initializer
    head_ops = op_census(graphs["head"])
    assert not {"Sin", "Cos", "Exp", "Range", "ConstantOfShape"} & set(head_ops)  # sine positions baked


@pytest.mark.parametrize("batch", [1, 2, 3])
def test_onnx_runtime_equals_pytorch(model, graphs, batch):
    images, tokens, _ = _scenes(batch, model.config.input_size, model.config.word_len)
    sessions = {name: _session(g) for name, g in graphs.items()}
    with torch.no_grad():
        c3, c4, c5 = model.encode_image(torch.from_numpy(images))
        word, state = model.encode_text(torch.from_numpy(tokens.tokens), torch.from_numpy(tokens.eot_index))
        logits = model.head(c3, c4, c5, word, torch.from_numpy(tokens.pad_mask), state)
    got_word, got_state = sessions["text"].run(None, {"tokens": tokens.tokens, "eot_index": tokens.eot_index})
    got_c = sessions["visual"].run(None, {"image": images})
    (got_logits,) = sessions["head"].run(None, {"c3": c3.numpy(), "c4": c4.numpy(), "c5": c5.numpy(),
                                                "word": word.numpy(), "pad_mask": tokens.pad_mask,
                                                "state": state.numpy()})
    pairs = [(got_word, word), (got_state, state), *zip(got_c, (c3, c4, c5)), (got_logits, logits)]
    for got, want in pairs:
        assert got.shape == tuple(want.shape)
        np.testing.assert_allclose(got, want.numpy(), atol=1e-4, rtol=0)


def test_padding_length_does_not_change_the_output(model, graphs):
    """The same sentence padded to 17 and to 22 tokens gives the same logits."""
    long_model = build_cris("cris_tiny", word_len=22).eval()
    long_model.load_state_dict(model.state_dict())
    long_graphs = {**graphs, "text": export_graph(long_model, "text"), "head": export_graph(long_model, "head")}
    images, _, samples = _scenes(2, model.config.input_size, 17)
    texts = [s.sentences[0] for s in samples]
    out = [_run_chain({n: _session(g) for n, g in gs.items()}, images, get_tokenizer().batch(texts, length))
           for gs, length in ((graphs, 17), (long_graphs, 22))]
    np.testing.assert_allclose(out[0], out[1], atol=1e-4, rtol=0)


def _head_reference(model, batch):
    """(head feed, torch logits) for ``batch`` held-out scenes."""
    images, tokens, _ = _scenes(batch, model.config.input_size, model.config.word_len)
    with torch.no_grad():
        c3, c4, c5 = model.encode_image(torch.from_numpy(images))
        word, state = model.encode_text(torch.from_numpy(tokens.tokens), torch.from_numpy(tokens.eot_index))
        logits = model.head(c3, c4, c5, word, torch.from_numpy(tokens.pad_mask), state)
    feed = {"c3": c3.numpy(), "c4": c4.numpy(), "c5": c5.numpy(), "word": word.numpy(),
            "pad_mask": tokens.pad_mask, "state": state.numpy()}
    return feed, logits.numpy()


def test_features_head_feeds_the_fused_similarity(model):
    graph = export_graph(model, "head", head_output="features")
    check_graph(graph, "head")
    feed, logits = _head_reference(model, 2)
    z_v, kernel = _session(graph).run(None, feed)
    c = model.config.vis_dim // 2
    grid = model.config.input_size // 4
    assert z_v.shape == (2, c, grid, grid) and kernel.shape == (2, c * 9 + 1)
    got = similarity_logits(z_v, kernel[:, :-1].reshape(2, c, 3, 3), kernel[:, -1])
    np.testing.assert_allclose(got, logits, atol=1e-4, rtol=0)


def test_plugin_head_holds_one_sim_upsample_node_of_the_plugin_contract(model):
    features = export_graph(model, "head", head_output="plugin")
    feed, logits = _head_reference(model, 2)
    z_v, weight, bias = _session(features).run(None, feed)  # what the plugin node receives
    size = model.config.input_size
    want = np.stack([logits_to_prob(l, size) for l in logits])[:, None]
    np.testing.assert_allclose(sim_upsample(z_v, weight, bias, size), want, atol=1e-4, rtol=0)
    graph = plugin.attach_sim_upsample(features, size)
    (node,) = [n for n in graph.graph.node if n.domain == plugin.DOMAIN]
    assert (node.op_type, list(node.input), list(node.output)) == ("SimUpsample", ["z_v", "weight", "bias"], ["prob"])
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert attrs == {"out_height": size, "out_width": size, "plugin_namespace": b"cris_edge", "plugin_version": b"1"}
    assert [(o.domain, o.version) for o in graph.opset_import if o.domain == plugin.DOMAIN] == [("cris_edge", 1)]
    out = graph.graph.output
    assert len(out) == 1 and [d.dim_param or d.dim_value for d in out[0].type.tensor_type.shape.dim] == [
        "batch", 1, size, size]
    check_graph(graph, "head", plugin_ops=[plugin.QUALIFIED_OP])
    assert any("without a plugin" in p for p in tensorrt_problems(graph))


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


def test_quiet_loggers_drop_only_this_threads_records_of_those_loggers():
    handler, noisy, ours = _Records(), logging.getLogger("onnxscript.test_quiet"), logging.getLogger("cris_edge.t")
    logging.root.addHandler(handler)
    try:
        with quiet_loggers("onnxscript", ROOT):
            noisy.warning("dropped")
            logging.warning("dropped too")  # the root logger
            noisy.error("an error goes through")
            ours.warning("another logger goes through")
            other = threading.Thread(target=lambda: noisy.warning("another thread goes through"))
            other.start()
            other.join()
        noisy.warning("after the block")
    finally:
        logging.root.removeHandler(handler)
    assert [r.getMessage() for r in handler.records] == [
        "an error goes through", "another logger goes through", "another thread goes through", "after the block"]
    assert handler.filters == [] and noisy.filters == [] and logging.root.filters == []


def test_quiet_loggers_from_many_threads_leave_no_filter_behind():
    handler, noisy = _Records(), logging.getLogger("onnxscript.test_quiet")
    logging.root.addHandler(handler)

    def work(k):
        for i in range(200):
            with quiet_loggers("onnxscript"):
                noisy.warning("dropped %d %d", k, i)
            noisy.warning("heard %d %d", k, i)

    try:
        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        logging.root.removeHandler(handler)
    messages = [r.getMessage() for r in handler.records]
    assert len(messages) == 800 and all(m.startswith("heard") for m in messages)
    assert handler.filters == noisy.filters == logging.root.filters == logging.lastResort.filters == []


def test_export_changes_no_process_wide_logging_or_warning_state(model):
    """The exporter's noise is silenced on the exporting thread only: another thread's records of
    the same loggers still come through while it runs, and nothing stays changed afterwards."""
    handler, stop, started = _Records(), threading.Event(), threading.Event()
    filters, disable = list(warnings.filters), logging.root.manager.disable

    def other_thread():
        while not stop.is_set():
            logging.getLogger("onnxscript.other_thread").warning("still heard")
            started.set()
            stop.wait(0.01)

    logging.root.addHandler(handler)
    worker = threading.Thread(target=other_thread)
    try:
        worker.start()
        started.wait(10)
        start = time.time()
        export_graph(model, "text")
        end = time.time()
        stop.set()
        worker.join()
    finally:
        stop.set()
        logging.root.removeHandler(handler)
    here = threading.get_ident()
    assert not [r for r in handler.records if r.thread == here and r.name.startswith(("onnxscript", "onnx_ir"))]
    assert [r for r in handler.records if r.getMessage() == "still heard" and start < r.created < end]
    assert logging.root.manager.disable == disable == 0 and warnings.filters == filters
    assert handler.filters == [] and logging.root.filters == [] and logging.lastResort.filters == []
    assert all(not getattr(logger, "filters", []) for logger in logging.root.manager.loggerDict.values())


def test_tensorrt_op_list_is_data_with_its_version():
    table = tensorrt_ops()
    assert table.tensorrt_version and "onnx-tensorrt" in table.source
    assert table.opset_min <= OPSET <= table.opset_max
    assert {"Conv", "MatMul", "LayerNormalization", "QuantizeLinear", "DequantizeLinear"} <= set(table.ops)


def _tiny_model(nodes, inputs, outputs, initializers=(), opset=OPSET):
    graph = helper.make_graph(nodes, "t", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_checks_reject_what_tensorrt_or_the_rules_cannot_take():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1, 8, 8])
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    cubic = _tiny_model([helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="cubic")], [x], [y], [scales])
    assert any("cubic" in p for p in tensorrt_problems(cubic))
    unknown = _tiny_model([helper.make_node("Hardmax", ["x"], ["h"]), helper.make_node("Resize", ["h", "", "scales"], ["y"],
                                                                                        mode="linear")],
                          [x], [y], [scales])
    table = tensorrt_ops()
    trimmed = type(table)(table.tensorrt_version, table.source, table.opset_min, table.opset_max,
                          {k: v for k, v in table.ops.items() if k != "Hardmax"}, table.attributes)
    assert any("Hardmax" in p and "not supported" in p for p in tensorrt_problems(unknown, trimmed))
    w = helper.make_tensor_value_info("w", TensorProto.FLOAT, ["batch", 1, 3, 3])
    o = helper.make_tensor_value_info("o", TensorProto.FLOAT, ["batch", 1, 4, 4])
    dynamic = _tiny_model([helper.make_node("Conv", ["x", "w"], ["o"], pads=[1, 1, 1, 1])], [x, w], [o])
    assert any("not constant" in p for p in rule_problems(dynamic))
    argmax = _tiny_model([helper.make_node("ArgMax", ["x"], ["o"], axis=1)], [x],
                         [helper.make_tensor_value_info("o", TensorProto.INT64, ["batch", 1, 4, 4])])
    assert any("ArgMax" in p for p in rule_problems(argmax))
    with pytest.raises(GraphCheckError, match="ArgMax"):
        check_graph(argmax, "argmax")


# ---- FP16 ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fp16_graphs(model, graphs):
    spec = CalibrationSpec(size=4)
    s, length = model.config.input_size, model.config.word_len
    return {name: fp16.convert_to_fp16(g, fp16.overflowing_nodes(g, graph_feeds(spec, name, graphs, s, length)))
            for name, g in graphs.items()}


@pytest.mark.parametrize("name", GRAPH_NAMES)
def test_fp16_graph_keeps_overflow_prone_ops_in_fp32(fp16_graphs, name):
    graph = fp16_graphs[name]
    check_graph(graph, name)
    types = tensor_types(graph)
    for node in graph.graph.node:
        if node.op_type in fp16.FP32_OPS:
            assert types[node.output[0]] == TensorProto.FLOAT, node.name
        if node.op_type in ("Conv", "Gemm"):
            assert types[node.input[0]] == TensorProto.FLOAT16, node.name
    floats = [v for v in (*graph.graph.input, *graph.graph.output)
              if v.type.tensor_type.elem_type in (TensorProto.FLOAT, TensorProto.FLOAT16)]
    assert floats and all(v.type.tensor_type.elem_type == TensorProto.FLOAT16 for v in floats)


def test_fp16_masks_match_fp32(model, graphs, fp16_graphs):
    images, tokens, samples = _scenes(12, model.config.input_size, model.config.word_len)
    ref = _run_chain({n: _session(g) for n, g in graphs.items()}, images, tokens)
    half = _run_chain({n: _session(g) for n, g in fp16_graphs.items()}, images, tokens, np.float16)
    assert np.abs(half - ref).max() < 0.05
    ious = [mask_iou(_mask(half[i], images, s), _mask(ref[i], images, s)) for i, s in enumerate(samples)]
    assert np.mean(ious) >= 0.99


def _mask(logits, images, sample):
    box = preprocess(sample.image, images.shape[-1])
    return logits_to_mask(logits[None], box.inverse, box.frame_size, box.input_size)


def test_fp16_overflow_scan_keeps_large_nodes_and_resize_scales_float32():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 2, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1, 4, 4])
    big = numpy_helper.from_array(np.array(1e5, np.float32), "big")
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    graph = _tiny_model([helper.make_node("Mul", ["x", "big"], ["m"], name="scale_up"),
                         helper.make_node("Div", ["m", "big"], ["d"], name="scale_down"),
                         helper.make_node("Resize", ["d", "", "scales"], ["y"], mode="linear", name="up")],
                        [x], [y], [big, scales])
    feed = {"x": np.ones((1, 1, 2, 2), np.float32)}
    assert set(fp16.overflowing_nodes(graph, [feed])) == {"scale_up"}
    half = fp16.convert_to_fp16(graph, ["scale_up", "scale_down"])
    onnx.checker.check_model(half, full_check=True)
    types = tensor_types(half)
    assert types["scales"] == TensorProto.FLOAT and types["y"] == TensorProto.FLOAT16
    (out,) = _session(half).run(None, {"x": feed["x"].astype(np.float16)})
    np.testing.assert_allclose(out, 1.0)


# ---- INT8 ----------------------------------------------------------------------------------


def _check_qdq_structure(fp32: onnx.ModelProto, quantized: onnx.ModelProto, placement: str) -> None:
    """The Q/DQ layout `int8` promises: every Conv, Gemm and constant-weight MatMul reads its
    activation and its weight through a DequantizeLinear, weights int8 per output channel with
    zero points 0, biases float; activations int8 with zero points 0 (tensorrt) or uint8
    (onnxruntime); no Q/DQ on those ops' outputs; the MatMuls of two activations and every
    other op (Softmax, LayerNormalization, Add, Resize...) read float tensors, or a pair that a
    quantized op reads too (one pair per tensor)."""
    graph = quantized.graph
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    dynamic = set(int8.dynamic_matmuls(fp32))
    # visual: the attention pool's query x key and probabilities x value; head: those of the
    # decoder's self and cross attention, and the projector's dynamic kernel
    assert len(dynamic) == {"visual": 2, "head": 5}[fp32.graph.name]
    quantized_inputs = {node.input[0] for node in graph.node
                        if node.op_type in int8.QUANTIZED_OPS and node.name not in dynamic}
    quantized_ops = 0
    for node in graph.node:
        feeds = [producer.get(name) for name in node.input]
        from_dq = [f is not None and f.op_type == "DequantizeLinear" for f in feeds]
        if node.op_type in int8.QUANTIZED_OPS and node.name not in dynamic:
            quantized_ops += 1
            assert from_dq[:2] == [True, True], node.name
            activation, weight = feeds[0], feeds[1]
            w_scale, w_zero = values[weight.input[1]], values[weight.input[2]]
            out_axis = 1 if node.op_type == "MatMul" else 0  # Gemm weights are [out, in] (transB)
            channels = values[weight.input[0]].shape[out_axis]
            assert w_zero.dtype == np.int8 and not w_zero.any() and w_scale.shape == (channels,), node.name
            assert helper.get_attribute_value(next(a for a in weight.attribute if a.name == "axis")) == out_axis
            a_zero = values[activation.input[2]]
            assert a_zero.shape == () and a_zero.dtype == (np.int8 if placement == "tensorrt" else np.uint8)
            if placement == "tensorrt":
                assert a_zero == 0, node.name
            if len(node.input) > 2:
                assert node.input[2] in values and values[node.input[2]].dtype == np.float32, node.name
        elif node.op_type not in ("QuantizeLinear", "DequantizeLinear"):  # only through a pair it shares
            shared = [name for name, dq in zip(node.input, from_dq) if dq]
            assert all(name in quantized_inputs for name in shared), f"{node.op_type} {node.name} reads {shared}"
        if node.op_type == "QuantizeLinear":
            source = producer.get(node.input[0])
            assert source is None or source.op_type not in int8.QUANTIZED_OPS, f"Q/DQ on {source.name}'s output"
    assert quantized_ops == sum(n.op_type in int8.QUANTIZED_OPS for n in fp32.graph.node) - len(dynamic)


@pytest.mark.parametrize("placement", sorted(int8.PLACEMENTS))
def test_int8_qdq_graphs_calibrate_cache_and_stay_close(model, graphs, placement, tmp_path: Path):
    s, length = model.config.input_size, model.config.word_len
    spec = CalibrationSpec(size=8)
    quantized = {}
    for name in int8.INT8_GRAPHS:
        cache = tmp_path / f"{name}.json"
        quantized[name] = int8.quantize_int8(graphs[name], graph_feeds(spec, name, graphs, s, length), cache, placement)
        assert cache.is_file()
        again = int8.quantize_int8(graphs[name], None, cache, placement)  # from the cache, no data
        assert again.SerializeToString() == quantized[name].SerializeToString()
        assert rule_problems(quantized[name]) == []
        census = op_census(quantized[name])
        assert census["QuantizeLinear"] > 0 and census["DequantizeLinear"] > 0
        _check_qdq_structure(graphs[name], quantized[name], placement)
        if placement == "tensorrt":
            assert tensorrt_problems(quantized[name]) == []
    # the caches are renamed into place whole: nothing else is left beside them
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{name}.json" for name in int8.INT8_GRAPHS)
    images, tokens, _ = _scenes(6, s, length)
    ref = _run_chain({n: _session(g) for n, g in graphs.items()}, images, tokens)
    got = _run_chain({n: _session(quantized.get(n, g)) for n, g in graphs.items()}, images, tokens)
    assert np.corrcoef(ref.ravel(), got.ravel())[0, 1] > 0.95
    if placement == "tensorrt":  # INT8 layers in a float16 network, as TensorRT runs it fastest
        mixed = {n: fp16.convert_to_fp16(quantized.get(n, g)) for n, g in graphs.items()}
        for name in int8.INT8_GRAPHS:
            check_graph(mixed[name], name)
            assert mixed[name].opset_import[0].version == fp16.QDQ_FP16_OPSET
            types = tensor_types(mixed[name])
            for node in mixed[name].graph.node:
                if node.op_type == "DequantizeLinear":
                    assert types[node.input[1]] == TensorProto.FLOAT16
        got = _run_chain({n: _session(g) for n, g in mixed.items()}, images, tokens, np.float16)
        assert np.corrcoef(ref.ravel(), got.ravel())[0, 1] > 0.95


def test_calibration_reads_an_lmdb_dataset_and_rejects_unknown_names(tmp_path: Path):
    from cris_edge.data import lmdb_store

    samples = [make_sample(i) for i in range(3)]
    entries = [lmdb_store.make_entry(cv2.imencode(".png", s.image)[1].tobytes(), s.mask, s.sentences, i, 1, f"{i}.png")
               for i, s in enumerate(samples)]
    path = tmp_path / "train.lmdb"
    lmdb_store.write_lmdb(path, entries, progress=False)
    spec = CalibrationSpec(str(path), size=2)
    assert spec.is_lmdb and spec.describe().startswith("lmdb:") and spec.describe().endswith(":2@seed500000")
    got = list(pairs(spec, 256, 17))
    assert len(got) == 2 and all(image.shape == (1, 3, 256, 256) and tokens.tokens.shape == (1, 17)
                                 for image, tokens in got)
    with pytest.raises(ValueError, match="fewer than --calib-size 5"):
        list(pairs(CalibrationSpec(str(path), size=5), 256, 17))
    with pytest.raises(ValueError, match="unknown calibration dataset 'coco'"):
        CalibrationSpec("coco")

