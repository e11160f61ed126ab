"""The decode cost model against hand calculations from the public configs."""

import pytest

from workloads import cost
from workloads.presets import build_model, meta_model, resolve_model

import torch


@pytest.fixture(scope="module")
def llama1b():
    return cost.model_shape(meta_model(resolve_model("llama-3.2-1b")))


@pytest.fixture(scope="module")
def opt13b():
    return cost.model_shape(meta_model(resolve_model("opt-1.3b")))


def test_llama_3_2_1b_shape_by_hand(llama1b):
    hidden, inter, kv_dim, vocab, layers = 2048, 8192, 8 * 64, 128256, 16
    layer_matrices = 2 * hidden * hidden + 2 * hidden * kv_dim + 3 * hidden * inter  # q,o + k,v + gate,up,down
    embed = vocab * hidden  # tied: also the LM head
    assert llama1b.params == embed + layers * (layer_matrices + 2 * hidden) + hidden
    assert llama1b.matmul_params == layers * layer_matrices + embed
    assert llama1b.lm_head_params == embed
    assert llama1b.gathered_params == 0  # the only table is the tied LM head, read in full
    assert llama1b.gathered_per_token == hidden
    assert llama1b.kv_elements_per_token == 2 * layers * 8 * 64


def test_llama_3_2_1b_decode_step_bf16(llama1b):
    # batch 1, 127 tokens cached: the step reads all weights (+ one embedding row),
    # reads K,V of 128 positions, writes K,V of one.
    step = cost.decode_step(llama1b, batch=1, cached=127, elem_bytes=2)
    assert step.weight_bytes == (1_235_814_400 + 2048) * 2 == 2_471_632_896
    kv_token_bytes = 2 * 16 * 8 * 64 * 2  # K and V, 16 layers, 8 KV heads x 64, bf16
    assert kv_token_bytes == 32_768
    assert step.kv_read_bytes == 128 * kv_token_bytes == 4_194_304
    assert step.kv_write_bytes == kv_token_bytes
    assert step.flops == 2 * 1_235_746_816 + 4 * 16 * 32 * 64 * 128 == 2_488_270_848
    assert step.bytes == 2_471_632_896 + 4_194_304 + 32_768


def test_opt_1_3b_decode_step_fp32_batch4(opt13b):
    hidden, ffn, vocab, layers = 2048, 8192, 50272, 24
    tok, pos = vocab * hidden, (2048 + 2) * hidden  # OPT's learned positions have an offset of 2
    layer = 4 * (hidden * hidden + hidden) + (hidden * ffn + ffn) + (ffn * hidden + hidden) + 2 * 2 * hidden
    assert opt13b.params == tok + pos + layers * layer + 2 * hidden == 1_315_758_080
    assert opt13b.gathered_params == pos  # positions are gathered; the tied token table is read in full
    step = cost.decode_step(opt13b, batch=4, cached=511, elem_bytes=4)
    assert step.weight_bytes == (1_315_758_080 - pos + 4 * (hidden + hidden)) * 4 == 5_246_304_256
    kv_token_bytes = 2 * 24 * 32 * 64 * 4
    assert step.kv_read_bytes == 4 * 512 * kv_token_bytes == 805_306_368
    assert step.kv_write_bytes == 4 * kv_token_bytes == 1_572_864
    matmul = layers * (4 * hidden * hidden + 2 * hidden * ffn) + tok
    assert step.flops == 4 * (2 * matmul + 4 * 24 * 32 * 64 * 512) == 10_889_986_048


def test_prefill_by_hand(llama1b):
    # 4 prompt tokens: the body runs on all 4, the LM head on the last only, 1+2+3+4 attention pairs.
    pre = cost.prefill(llama1b, batch=1, prompt_len=4, elem_bytes=2)
    body = 1_235_746_816 - 262_668_288
    assert pre.flops == 2 * body * 4 + 2 * 262_668_288 + 4 * 16 * 32 * 64 * 10
    assert pre.kv_write_bytes == 4 * 32_768 and pre.kv_read_bytes == 0
    assert pre.weight_bytes == (1_235_814_400 + 4 * 2048) * 2


def test_decode_run_sums_the_steps(llama1b):
    run = cost.decode_run(llama1b, batch=2, prompt_len=10, new_tokens=5, elem_bytes=2)
    steps = [cost.decode_step(llama1b, 2, cached, 2) for cached in (10, 11, 12, 13)]
    assert run.bytes == sum(s.bytes for s in steps)
    assert run.flops == sum(s.flops for s in steps)
    # linear in context: the mean step is the step at the mean context
    mean = cost.decode_step(llama1b, 2, 11, 2).kv_read_bytes + cost.decode_step(llama1b, 2, 12, 2).kv_read_bytes
    assert run.kv_read_bytes == 2 * mean


def test_sliding_window_caps_attention(llama1b):
    windowed = cost.ModelShape(**{**llama1b.__dict__, "sliding_window": 64})
    assert cost.decode_step(windowed, 1, 1000, 2).kv_read_bytes == 64 * 32_768
    assert cost.decode_step(windowed, 1, 10, 2).kv_read_bytes == 11 * 32_768
    assert cost.prefill(windowed, 1, 100, 2).flops < cost.prefill(llama1b, 1, 100, 2).flops


def test_shape_of_built_model_matches_meta():
    spec = resolve_model("tiny-opt")
    built = cost.model_shape(build_model(spec, torch.float32, torch.device("cpu"), "sdpa"))
    assert built == cost.model_shape(meta_model(spec))
    assert built.params == sum(p.numel() for p in build_model(spec, torch.float32, torch.device("cpu"), "sdpa").parameters())


def test_kernel_cost_models_by_hand():
    assert cost.copy(1000, 4) == cost.Cost(bytes=8000, flops=0)
    assert cost.triad(1000, 4) == cost.Cost(bytes=12000, flops=2000)
    assert cost.matmul(2, 3, 4, 2) == cost.Cost(bytes=(8 + 12 + 6) * 2, flops=48)
    # non-causal: 4 query x 6 key pairs per head; Q,O (2x4x8 per head) and K,V (2x6x8 per KV head)
    a = cost.attention(batch=1, heads=2, kv_heads=1, q_len=4, kv_len=6, head_dim=8, elem_bytes=2, causal=False)
    assert a.flops == 4 * 2 * 8 * 24
    assert a.bytes == (2 * 2 * 4 * 8 + 2 * 1 * 6 * 8) * 2
    # causal, 4 queries aligned to the end of 6 keys: they see 3, 4, 5, 6 keys
    c = cost.attention(1, 2, 1, 4, 6, 8, 2, causal=True)
    assert c.flops == 4 * 2 * 8 * (3 + 4 + 5 + 6)
    assert cost.attention(1, 2, 1, 4, 4, 8, 2, causal=True).flops == 4 * 2 * 8 * 10
    backward = cost.attention(1, 2, 1, 4, 6, 8, 2, causal=True, backward=True)
    assert backward.flops == 5 * c.flops // 2
    # two sequences with 10 and 30 cached tokens, 8 query heads sharing 2 KV heads of 16
    d = cost.decode_attention([10, 30], heads=8, kv_heads=2, head_dim=16, elem_bytes=2)
    assert d.bytes == (2 * 2 * 40 * 16 + 2 * 2 * 8 * 16) * 2
    assert d.flops == 4 * 8 * 40 * 16


def test_finetune_step_by_hand(llama1b):
    # 8 tokens: forward = 2 FLOPs per matrix weight per token (LM head on every token) + causal attention
    # over 1+2+...+8 = 36 pairs; backward = 2x the matmuls and 2.5x attention's forward.
    seq, matmul, attention_per_pair = 8, 1_235_746_816, 4 * 16 * 32 * 64
    matmuls, attention = 2 * matmul * seq, attention_per_pair * 36
    per_sequence = (matmuls + attention) + (2 * matmuls + 5 * attention // 2)
    assert per_sequence == 59_315_847_168 + 16_515_072  # 3 x 19_771_949_056 + 3.5 x 4_718_592
    assert cost.finetune_step(llama1b, batch=2, seq_len=seq) == 2 * per_sequence
    # attention's backward is the fused-attention cost model's
    assert 5 * attention // 2 == cost.attention(1, 32, 8, seq, seq, 64, 2, causal=True, backward=True).flops * 16
