"""``attn_implementation="triton"`` inside Hugging Face models: same logits, tokens and gradients as eager.

Tiny models (2 layers, hidden 64) of each family the presets cover; the Qwen2 and
Mistral ones are the real presets' configs shrunk, so family-specific details
(Qwen2's q/k/v biases, Mistral's head_dim, the layer types) stay as published.
"""

import pytest
import torch
from transformers import AutoConfig

from workloads.attention import check_attn, register, triton_attention_forward
from workloads.errors import UserError
from workloads.presets import ModelSpec, build_model, resolve_model

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, vocab_size=512, max_position_embeddings=256)


def shrunk(preset: str) -> ModelSpec:
    config = resolve_model(preset).config.to_dict()
    config.update(SMALL)
    config.pop("layer_types", None)
    return ModelSpec(f"{preset}-shrunk", AutoConfig.for_model(**config))


def spec_for(name: str) -> ModelSpec:
    return resolve_model(name) if name.startswith("tiny-") else shrunk(name)


def pair(spec: ModelSpec):
    """The same random weights under eager and under triton."""
    return (build_model(spec, torch.float32, DEVICE, "eager", seed=1),
            build_model(spec, torch.float32, DEVICE, "triton", seed=1))


def assert_same_generation(ours, theirs, ids, **args):
    """Same greedy tokens and, step by step, the same logits (a wrong key read shows in the logits
    long before it flips an argmax)."""
    args = dict(max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=0, output_scores=True,
                return_dict_in_generate=True, **args)
    a, b = ours.generate(ids, **args), theirs.generate(ids, **args)
    assert torch.equal(a.sequences, b.sequences)
    for step_a, step_b in zip(a.scores, b.scores, strict=True):
        torch.testing.assert_close(step_a, step_b, rtol=1e-5, atol=1e-6)


def tokens(batch: int, length: int, seed: int) -> torch.Tensor:
    return torch.randint(3, 512, (batch, length), generator=torch.Generator().manual_seed(seed)).to(DEVICE)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-opt", "tiny-gpt2", "qwen2.5-0.5b", "mistral-7b"])
def test_same_logits_and_greedy_tokens_as_eager(name):
    eager, triton = pair(spec_for(name))
    assert triton.config._attn_implementation == "triton"
    ids = tokens(2, 21, seed=len(name))
    with torch.no_grad():
        torch.testing.assert_close(triton(ids).logits, eager(ids).logits, rtol=1e-5, atol=1e-6)
    assert_same_generation(triton, eager, ids[:, :11])


def test_static_cache_masks_the_unused_tail():
    """A static cache hands attention the whole pre-allocated buffer plus a mask over its unused tail."""
    eager, triton = pair(resolve_model("tiny-llama"))
    assert_same_generation(triton, eager, tokens(1, 9, seed=2), cache_implementation="static")


def test_left_padding():
    eager, triton = pair(resolve_model("tiny-llama"))
    ids = tokens(2, 17, seed=3)
    keep = torch.ones_like(ids)
    keep[1, :6] = 0
    with torch.no_grad():
        ours = triton(ids, attention_mask=keep).logits
        theirs = eager(ids, attention_mask=keep).logits
    torch.testing.assert_close(ours[0], theirs[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours[1, 6:], theirs[1, 6:], rtol=1e-5, atol=1e-6)


def test_training_gradients_match_eager():
    eager, triton = pair(resolve_model("tiny-llama"))
    ids = tokens(2, 21, seed=4)
    for model in (eager, triton):
        model.train()
        model(ids, labels=ids).loss.backward()
    for (name, ours), theirs in zip(triton.named_parameters(), eager.parameters()):
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_triton_needs_a_gpu_outside_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(UserError, match="CUDA GPU"):
        check_attn("triton", torch.device("cpu"))
    check_attn("sdpa", torch.device("cpu"))
    with pytest.raises(UserError, match="unknown attention"):
        check_attn("flash", torch.device("cpu"))


def test_dropout_is_refused():
    register()
    q = torch.randn(1, 2, 4, 16)
    with pytest.raises(ValueError, match="dropout"):
        triton_attention_forward(torch.nn.Module(), q, q, q, None, dropout=0.1)


def test_left_padded_batch_generates_like_eager():
    """Decode steps with a padding mask go through the decode kernel's mask path."""
    eager, triton = pair(resolve_model("tiny-llama"))
    ids = tokens(2, 10, seed=6)
    keep = torch.ones_like(ids)
    keep[0, :4] = 0
    assert_same_generation(triton, eager, ids, attention_mask=keep)
    assert_same_generation(triton, eager, ids, attention_mask=keep, cache_implementation="static")


def test_decode_steps_use_the_decode_kernel(monkeypatch):
    import kernels.decode_attention as dec

    calls = []
    real = dec.decode_attention
    monkeypatch.setattr(dec, "decode_attention", lambda *a, **k: calls.append(a[3].tolist()) or real(*a, **k))
    model = build_model(resolve_model("tiny-llama"), torch.float32, DEVICE, "triton", seed=1)
    model.generate(tokens(1, 7, seed=7), max_new_tokens=3, min_new_tokens=3, do_sample=False, pad_token_id=0,
                   cache_implementation="static")
    layers = model.config.num_hidden_layers
    assert calls == [[8]] * layers + [[9]] * layers  # lengths grow by one per step, never the static capacity
