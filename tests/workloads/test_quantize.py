"""Quantized decode: the int8/fp8 KV cache and int8 weights in the lean engine, their accuracy blocks,
their stored-bytes cost, and the requests refused (kernels run in Triton's interpreter on CPU)."""

import pytest
import torch

from workloads import cost
from workloads.decode import DecodePoint, DecodeWorkload, GenerationOptions, check_formats
from workloads.errors import UserError
from workloads.lean import LeanEngine
from workloads.precision import PRECISIONS
from workloads.presets import build_model, resolve_model
from workloads.quantize import Int8Linear, QuantizedStaticCache, quantize_weights

CPU = torch.device("cpu")


def prompt(batch, length, seed=0):
    return torch.randint(3, 500, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def llama():
    return build_model(resolve_model("tiny-llama"), torch.float32, CPU, "triton", seed=3)


@pytest.mark.parametrize("fmt,dtype,tol", [("int8", torch.int8, 0.01), ("fp8", torch.float8_e4m3fn, 0.03)])
def test_quantized_cache_stores_the_format_and_decodes_like_the_float_one(llama, fmt, dtype, tol):
    ids = prompt(2, 12)  # longer than the decode kernel's 8 queries: the prefill reads the dequantized cache
    first, tokens, _ = LeanEngine(llama).replay(ids, 5)
    engine = LeanEngine(llama, kv_format=fmt)
    q_first, chosen, _ = engine.replay(ids, 5, forced=tokens)
    assert isinstance(engine.cache, QuantizedStaticCache)
    layer = engine.cache.layers[0]
    assert layer.keys.dtype == dtype and layer.values.dtype == dtype
    written = 12 + 4  # the prompt and the 4 fed tokens; the last choice is never fed
    assert (layer.k_scale[:, :, :written] > 0).all() and (layer.k_scale[:, :, written:] == 0).all()
    error = (q_first - first).abs().max().item()
    assert 0 < error < tol * first.abs().max().item()  # quantized (not exact), yet close
    assert (chosen == tokens).float().mean() >= 0.8


def test_quantized_cache_holds_what_was_written(llama):
    """Dequantized, the first layer's int8 cache is the float one to within half a quantization step per
    vector (the first layer only: later layers see inputs the quantized cache already changed)."""
    ids, fed = prompt(1, 9, seed=1), prompt(1, 3, seed=2)
    ref, q = LeanEngine(llama), LeanEngine(llama, kv_format="int8")
    ref.replay(ids, 3, forced=fed)
    q.replay(ids, 3, forced=fed)
    ref_layer, layer = ref.cache.layers[0], q.cache.layers[0]
    for stored, scale, expected in ((layer.keys, layer.k_scale, ref_layer.keys),
                                    (layer.values, layer.v_scale, ref_layer.values)):
        error = (stored.float() * scale[..., None] - expected).abs()
        assert (error <= scale[..., None] / 2 + 1e-7).all()
        assert error[:, :, :11].max() > 0  # 9 prompt tokens and the 2 fed ones are written, quantized


def test_int8_keys_without_their_cache_are_refused(llama):
    from workloads.attention import triton_attention_forward

    q = torch.randn(1, 4, 1, 16)
    k = torch.zeros(1, 2, 8, 16, dtype=torch.int8)
    with pytest.raises(ValueError, match="quantized_kv"):
        triton_attention_forward(llama.model.layers[0].self_attn, q, k, k, None)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_int8_weights_replace_every_linear_layer_and_stay_close(name):
    from transformers.pytorch_utils import Conv1D

    model = build_model(resolve_model(name), torch.float32, CPU, "eager", seed=1)
    ids = prompt(2, 6)
    with torch.no_grad():
        before = model(ids).logits
        quantize_weights(model, "int8")
        after = model(ids).logits
    assert not any(isinstance(m, (torch.nn.Linear, Conv1D)) for m in model.modules())
    assert isinstance(model.get_output_embeddings(), Int8Linear)
    error = (after - before).abs().max().item()
    assert 0 < error < 0.02 * before.abs().max().item()


def workload(kv="auto", weights="auto", engine="lean", options=GenerationOptions(), attn="triton"):
    return DecodeWorkload(resolve_model("tiny-llama"), PRECISIONS["fp32"], CPU, attn, options, seed=2, engine=engine,
                          points=[DecodePoint(2, 6, 4)], warmup=0, repeats=1, kv_cache=kv, weights=weights)


def test_quantized_variants_carry_quality_and_count_stored_bytes(llama):
    point = DecodePoint(2, 6, 4)
    plain, quant = workload(), workload(kv="int8", weights="int8")
    for w in (plain, quant):
        w.setup()
    try:
        assert plain.quality(point) is None
        q = quant.quality(point)
        assert q["tokens_compared"] == 2 * 4 and 0.5 <= q["token_agreement"] <= 1
        assert 0 < q["logit_mean_abs_err"] <= q["logit_max_abs_err"] < 0.1
        assert 0 <= q["identical_prefix_tokens"] <= 4
        fields = quant.fields(point)
        assert (fields["kv_format"], fields["weight_format"], fields["weight_impl"]) == ("int8", "int8", "triton")
        assert (plain.fields(point)["kv_format"], plain.fields(point)["weight_format"]) == ("fp32", "fp32")
        shape = plain.shape
        kv_fp32 = shape.kv_elements_per_token * 4
        kv_int8 = shape.kv_elements_per_token + 4 * shape.kv_elements_per_token // shape.head_dim
        a, b = plain.cost(point).details, quant.cost(point).details
        assert (a["kv_bytes_per_token"], b["kv_bytes_per_token"]) == (kv_fp32, kv_int8)
        assert b["kv_read_bytes_per_step"] * kv_fp32 == pytest.approx(a["kv_read_bytes_per_step"] * kv_int8)
        assert b["weight_bytes_per_step"] < 0.3 * a["weight_bytes_per_step"]  # ~1/4 of fp32, plus scales
        assert a["flops_per_step"] == b["flops_per_step"]
        assert quant.footprint_bytes() < plain.footprint_bytes()
    finally:
        for w in (plain, quant):
            w.teardown()


def test_hf_quantized_cache_peer_runs_and_has_quality():
    w = workload(kv="fp8", engine="hf", options=GenerationOptions(cache="quantized"), attn="sdpa")
    w.setup()
    try:
        point = w.points[0]
        from workloads.workload import Runs

        region = w.region(point)
        assert isinstance(region, Runs)
        q = w.quality(point)
        assert q["tokens_compared"] == 8 and q["token_agreement"] >= 0.5
        assert w.generation_config(point).cache_config == {"backend": "fp8"}
    finally:
        w.teardown()


def fmt_check(kv=("auto",), weights=("auto",), engines=("lean",), attn="triton", cache="dynamic", dtype="fp32",
              sample=False, tp=1):
    check_formats([PRECISIONS[dtype]], CPU, attn, GenerationOptions(cache=cache, do_sample=sample), list(engines),
                  list(kv), list(weights), tp)


@pytest.mark.parametrize("kwargs,match", [
    ({"kv": ["int8"], "attn": "sdpa"}, "add --attn triton"),
    ({"kv": ["int8"], "engines": ["hf-static"]}, "keeps a float cache"),
    ({"kv": ["fp8"], "engines": ["hf"]}, "--cache quantized"),
    ({"engines": ["hf"], "cache": "quantized"}, "give --kv-cache int8 or fp8"),
    ({"kv": ["bf16"], "dtype": "fp32"}, "stored in the compute dtype"),
    ({"kv": ["int9"]}, "distinct formats"),
    ({"weights": ["int8", "int8"]}, "distinct formats"),
    ({"weights": ["int8"], "tp": 2}, "drop --tp"),
    ({"kv": ["int8"], "sample": True}, "drop --do-sample"),
])
def test_requests_that_cannot_run_are_refused(kwargs, match):
    with pytest.raises(UserError, match=match):
        fmt_check(**kwargs)


def test_good_requests_pass():
    fmt_check(kv=["auto", "int8", "fp8"], weights=["auto", "int8", "int8-torchao"])
    fmt_check(kv=["bf16"], dtype="bf16")
    fmt_check(kv=["int8"], engines=["hf"], cache="quantized", attn="sdpa")


def test_storage_defaults_to_the_compute_dtype():
    shape = cost.model_shape(build_model(resolve_model("tiny-llama"), torch.float32, CPU, "eager"))
    assert cost.FLOAT.weight_bytes(shape, 3, 2) == shape.weights_read(3) * 2
    assert cost.FLOAT.kv_bytes_per_token(shape, 2) == shape.kv_elements_per_token * 2


def test_perplexity_change_on_a_local_text_dataset(tmp_path, monkeypatch):
    import math

    from workloads import decode

    pytest.importorskip("torchao")
    monkeypatch.setattr(decode, "PPL_ROWS", 2)
    monkeypatch.setattr(decode, "PPL_CONTEXT", 4)
    monkeypatch.setattr(decode, "PPL_TOKENS", 6)
    (tmp_path / "test.txt").write_text("\n".join(f"line {i} of a small local text dataset" for i in range(20)))
    w = DecodeWorkload(resolve_model("tiny-llama"), PRECISIONS["fp32"], CPU, "sdpa", seed=2, engine="lean",
                       points=[DecodePoint(1, 5, 3)], warmup=0, repeats=1, weights="int8-torchao",
                       quality_data=(tmp_path, "test"))
    w.setup()
    try:
        q = w.quality(w.points[0])
    finally:
        w.teardown()
    assert q["ppl_tokens"] == 12 and q["ppl_data"].endswith("(test)")
    assert 1 < q["ppl"] and 1 < q["ppl_reference"] and q["ppl"] != q["ppl_reference"]
    assert q["ppl_delta"] == pytest.approx(q["ppl"] - q["ppl_reference"])
    assert math.isclose(q["ppl_reference"], q["ppl"], rel_tol=0.05)  # int8 weights barely move it


def test_too_little_text_for_perplexity_is_refused(tmp_path):
    from workloads.decode import text_rows

    (tmp_path / "test.txt").write_text("short\n")
    with pytest.raises(UserError, match="perplexity needs"):
        text_rows(resolve_model("tiny-llama"), tmp_path, "test")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_lean_int8_weights_and_kv_compiled_on_a_gpu():
    """A real-size model in bf16 on the GPU: the compiled (CUDA-graph) step over int8 weights and an int8
    cache runs, and its greedy tokens mostly agree with the bf16 model's."""
    gpu = torch.device("cuda")
    w = DecodeWorkload(resolve_model("llama-3.2-1b"), PRECISIONS["bf16"], gpu, "triton", seed=0, engine="lean",
                       points=[DecodePoint(1, 128, 16)], warmup=1, repeats=1, kv_cache="int8", weights="int8")
    w.setup()
    try:
        assert w.lean.compiled
        point = w.points[0]

        class Clock:
            def start(self):
                self.ticks = []

            def tick(self):
                self.ticks.append(0.0)

            def stop(self):
                return type("T", (), {"ticks_ms": self.ticks, "end_ms": 0.0})()

        for index in range(3):  # warm-up (compiles and captures), then replays
            w.run(point, w.prompt(point, index), Clock())
        q = w.quality(point)
        assert q["token_agreement"] >= 0.5 and q["logit_max_abs_err"] < 1.0
    finally:
        w.teardown()
