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


# --- Mixture of experts (issue 13, part 8) ------------------------------------------------------------------------
# A tiny Mixtral: hidden 64, 8 experts of intermediate 96 (gate, up, down), 2 per token, 2 layers, GQA 4/2 of 16,
# vocab 512, untied embeddings. Counted by hand below.
H, I, N, K, L, V = 64, 96, 8, 2, 2, 512
ATTENTION = 2 * H * H + 2 * H * (2 * 16)  # q, o + k, v
ROUTER = N * H
EXPERT = 3 * H * I  # one expert's gate, up and down matrices
NORMS = 2 * H


def tiny_mixtral_config(**overrides):
    from transformers import MixtralConfig

    fields = dict(vocab_size=V, hidden_size=H, intermediate_size=I, num_hidden_layers=L, num_attention_heads=4,
                  num_key_value_heads=2, num_local_experts=N, num_experts_per_tok=K, max_position_embeddings=256,
                  tie_word_embeddings=False)
    return MixtralConfig(**{**fields, **overrides})


def meta_of(config):
    from workloads.presets import ModelSpec

    return meta_model(ModelSpec("tiny-moe", config))


@pytest.fixture(scope="module")
def moe():
    return cost.model_shape(meta_of(tiny_mixtral_config()))


def test_mixtral_shape_by_hand(moe):
    assert moe.params == L * (ATTENTION + ROUTER + N * EXPERT + NORMS) + 2 * V * H + H == 386_368
    assert moe.expert_params == L * N * EXPERT == 294_912  # all 8 experts are resident
    assert (moe.experts, moe.experts_per_token) == (N, K)
    # a token multiplies the dense matrices (router included) and 2 of the 8 experts' 3-D [n, out, in] tensors
    assert moe.matmul_params == L * (ATTENTION + ROUTER + K * EXPERT) + V * H == 132_096
    assert moe.lm_head_params == V * H and moe.gathered_params == V * H and moe.gathered_per_token == H
    assert moe.kv_elements_per_token == 2 * L * 2 * 16


def test_mixtral_decode_step_reads_the_experts_its_tokens_use(moe):
    dense = L * (ATTENTION + ROUTER + NORMS) + V * H + H  # LM head and final norm in full; embedding rows gathered
    one = cost.decode_step(moe, batch=1, cached=9, elem_bytes=2)
    assert one.weight_bytes == (dense + H + L * K * EXPERT) * 2 == 264_960  # one token reads 2 experts per layer
    assert one.flops == 2 * 132_096 + 4 * L * 4 * 16 * 10
    # 4 tokens: expected distinct experts per layer 8 * (1 - (6/8)^4) = 5.46875
    four = cost.decode_step(moe, batch=4, cached=9, elem_bytes=2)
    assert moe.experts_read(4) == pytest.approx(5.46875)
    assert four.weight_bytes == (dense + 4 * H + L * EXPERT * 5.46875) * 2 == 521_088
    assert four.flops == 4 * one.flops  # FLOPs stay k experts per token
    # a long prompt reads (nearly) every expert
    pre = cost.prefill(moe, batch=2, prompt_len=64, elem_bytes=2)
    assert pre.weight_bytes == pytest.approx((dense + 128 * H + L * N * EXPERT) * 2, rel=1e-6)
    assert pre.flops == 2 * (2 * (132_096 - V * H) * 64 + 2 * V * H + 4 * L * 4 * 16 * (64 * 65 // 2))


def test_expected_distinct_experts_matches_random_routing(moe):
    import numpy as np

    rng = np.random.default_rng(0)
    for tokens in (1, 3, 16):
        # each token picks 2 different experts of 8 at random; count the distinct ones per trial
        picks = np.argsort(rng.random((4000, tokens, N)), axis=-1)[..., :K]
        distinct = [len(np.unique(trial)) for trial in picks]
        assert np.mean(distinct) == pytest.approx(moe.experts_read(tokens), rel=0.02)
    assert moe.experts_read(1) == K


def test_mixtral_finetune_counts_k_experts(moe):
    pairs = 8 * 9 // 2
    assert cost.finetune_step(moe, batch=1, seq_len=8) == 3 * 2 * 132_096 * 8 + 7 * (4 * L * 4 * 16 * pairs) // 2


def test_mixtral_matmul_flops_match_torch_flop_counter(moe):
    """Independent of the hand count: torch counts the matmuls a real forward runs (experts one by one)."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_mixtral_config(), experts_implementation="eager",
                                             attn_implementation="eager").eval()
    ids = torch.randint(0, V, (3, 7))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(ids)  # logits for all 21 tokens
    assert counter.get_flop_counts()["Global"][torch.ops.aten.mm] == 2 * 21 * moe.matmul_params


def test_dense_models_have_no_experts(llama1b, opt13b):
    for shape in (llama1b, opt13b):
        assert (shape.expert_params, shape.experts, shape.experts_per_token) == (0, 0, 0)
        assert shape.weights_read(7) == shape.params - shape.gathered_params + 7 * shape.gathered_per_token


def test_per_expert_module_list_counts_like_3d_tensors(moe):
    """The older layout (transformers 4.x Mixtral): ``experts`` is a list of n modules of linears."""
    from torch import nn

    model = meta_of(tiny_mixtral_config())
    with torch.device("meta"):
        for layer in model.model.layers:
            layer.mlp.experts = nn.ModuleList(
                nn.ModuleDict({"w1": nn.Linear(H, I, bias=False), "w3": nn.Linear(H, I, bias=False),
                               "w2": nn.Linear(I, H, bias=False)}) for _ in range(N))
    assert cost.model_shape(model) == moe


@pytest.mark.parametrize("change, message", [
    (dict(num_local_experts=6), r"experts\.gate_up_proj has shape \(8, 192, 64\), not \[6, \.\.\.\]"),
    (dict(num_experts_per_tok=9), "num_experts_per_tok=9 is not k of n"),
])
def test_moe_layouts_it_cannot_count_are_refused(change, message):
    from workloads.errors import UserError

    model = meta_of(tiny_mixtral_config())
    for key, value in change.items():
        setattr(model.config, key, value)
    with pytest.raises(UserError, match=message) as refused:
        cost.model_shape(model)
    assert "use a dense model, or a Mixtral-style MoE" in str(refused.value)


def test_declared_experts_without_expert_weights_are_refused():
    from workloads.errors import UserError

    model = meta_model(resolve_model("tiny-llama"))
    model.config.num_experts = 4  # says MoE, but every MLP is dense: some layout llmbench does not know
    with pytest.raises(UserError, match="num_experts=4 experts but no experts per token"):
        cost.model_shape(model)
    model.config.num_experts_per_tok = 2
    with pytest.raises(UserError, match="declares num_experts=4 experts but no expert weights were found"):
        cost.model_shape(model)
    model.config.num_experts = 1  # one expert (or none) is a dense model
    assert cost.model_shape(model) == cost.model_shape(meta_model(resolve_model("tiny-llama")))


def test_expert_modules_without_a_count_are_refused():
    from torch import nn

    from workloads.errors import UserError

    model = meta_model(resolve_model("tiny-llama"))
    with torch.device("meta"):
        model.model.layers[0].mlp.experts = nn.ModuleList(nn.Linear(H, H) for _ in range(4))
    with pytest.raises(UserError, match="modules named 'experts' but its config gives no expert count"):
        cost.model_shape(model)


def test_mixtral_8x7b_active_parameters():
    # Mistral AI: 46.7B parameters, 12.9B used per token (2 of 8 experts per layer)
    shape = cost.model_shape(meta_model(resolve_model("mixtral-8x7b")))
    hidden, layers, vocab = 4096, 32, 32000
    active = shape.params - shape.expert_params * 6 // 8
    assert active == 12_879_925_248
    assert shape.matmul_params == active - vocab * hidden - (2 * layers + 1) * hidden  # no embedding gather, norms
    step = cost.decode_step(shape, batch=1, cached=0, elem_bytes=2)
    assert step.weight_bytes == (active - vocab * hidden + hidden) * 2  # one token: 2 experts per layer


def test_allreduce_bus_factor_is_two_n_minus_one_over_n():
    assert [cost.allreduce_bus_factor(n) for n in (1, 2, 4, 8)] == [0.0, 1.0, 1.5, 1.75]
    assert cost.allreduce(1000, 4).bytes == 1500 and cost.allreduce(1000, 4).flops == 0


def test_llama_3_2_1b_decode_step_int8_weights_and_kv_by_hand(llama1b):
    # int8 weights: every linear layer (16 x the layer matrices, and the LM head, which is the tied table)
    # at one byte plus a float32 scale per output channel; norms and the gathered embedding row stay bf16.
    hidden, inter, kv_dim, vocab, layers = 2048, 8192, 8 * 64, 128256, 16
    values = layers * (2 * hidden * hidden + 2 * hidden * kv_dim + 3 * hidden * inter) + vocab * hidden
    channels = layers * (hidden + kv_dim + kv_dim + hidden + inter + inter + hidden) + vocab
    norms = layers * 2 * hidden + hidden
    storage = cost.Storage(weight_values=values, weight_scales=channels, kv_value_bytes=1)
    step = cost.decode_step(llama1b, batch=1, cached=127, elem_bytes=2, storage=storage)
    assert step.weight_bytes == values + 4 * channels + 2 * (norms + hidden)
    kv_token_bytes = 2 * 16 * 8 * (64 + 4)  # K and V, 16 layers, 8 KV heads: 64 int8 values + a float32 scale
    assert step.kv_read_bytes == 128 * kv_token_bytes and step.kv_write_bytes == kv_token_bytes
    assert step.flops == cost.decode_step(llama1b, 1, 127, 2).flops  # the same arithmetic
    ratio = step.bytes / cost.decode_step(llama1b, 1, 127, 2).bytes
    assert 0.5 < ratio < 0.51  # about half of bf16's bytes


def test_quantized_weight_counts_match_the_model_by_hand():
    from workloads.quantize import quantized_weight_counts

    model = build_model(resolve_model("tiny-gpt2"), torch.float32, torch.device("cpu"), "eager")
    cfg = model.config
    h, layers, vocab = cfg.n_embd, cfg.n_layer, cfg.vocab_size
    inner = cfg.n_inner or 4 * h
    # per block: c_attn (h -> 3h), c_proj (h -> h), c_fc (h -> inner), mlp c_proj (inner -> h); then the LM head
    values = layers * (3 * h * h + h * h + h * inner + inner * h) + vocab * h
    channels = layers * (3 * h + h + inner + h) + vocab
    assert quantized_weight_counts(model) == (values, channels)
