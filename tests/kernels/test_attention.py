"""Fused attention vs the float64 definition: forward and backward, odd shapes, GQA, masks, every dtype.

On a CPU the kernels run in Triton's interpreter (tests/conftest.py sets it up);
on a GPU the same tests run the compiled kernels. Outputs the kernel allocates are
poisoned with NaN, so an element it forgot to write fails the comparison.
"""

import math

import pytest
import torch

from kernels.attention import attention, attention_reference

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16
# max |ours - exact| / max |exact|, per dtype (DESIGN.md: fp32 ~1e-5, fp16 ~1e-3, bf16 ~1e-2)
TOL = {F32: 2e-5, F16: 4e-3, BF16: 3e-2}


pytestmark = pytest.mark.usefixtures("poisoned_outputs")  # tests/kernels/conftest.py


def inputs(batch, heads, kv_heads, q_len, kv_len, head_dim, dtype, seed):
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(DEVICE, dtype).requires_grad_()

    return (rand(batch, heads, q_len, head_dim), rand(batch, kv_heads, kv_len, head_dim),
            rand(batch, kv_heads, kv_len, head_dim))


def assert_close(ours, exact, dtype, what):
    assert not torch.isnan(ours).any(), f"{what}: NaN (an element was never written)"
    scale = exact.abs().max().item() or 1.0
    err = (ours.double() - exact).abs().max().item() / scale
    assert err <= TOL[dtype], f"{what}: relative error {err:.2e} > {TOL[dtype]:.0e}"


def run_and_compare(q, k, v, causal, scale=None, mask=None, seed=0):
    dtype = q.dtype
    out = attention(q, k, v, causal=causal, scale=scale, mask=mask)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed + 1)).to(DEVICE, dtype)
    out.backward(grad)
    exact_inputs = [x.detach().double().requires_grad_() for x in (q, k, v)]
    exact = attention_reference(*exact_inputs, causal=causal, scale=scale, mask=mask)
    exact.backward(grad.double())
    assert_close(out.detach(), exact.detach(), dtype, "out")
    for name, ours, ref in zip("qkv", (q, k, v), exact_inputs):
        assert ours.grad.shape == ours.shape
        assert_close(ours.grad, ref.grad, dtype, f"d{name}")
    return out


CASES = [
    # batch, heads, kv_heads, q_len, kv_len, head_dim, causal, dtype
    (1, 2, 2, 37, 37, 16, True, F32),     # MHA, length not a multiple of the block
    (2, 4, 1, 19, 45, 32, False, F32),    # GQA 4, fewer queries than keys
    (1, 8, 1, 33, 20, 64, True, F16),     # GQA 8, more queries than keys, causal
    (1, 4, 1, 50, 50, 24, True, BF16),    # head dim not a power of two
    (1, 2, 1, 17, 17, 128, False, BF16),  # head dim 128
    (2, 2, 2, 1, 29, 64, False, F16),     # one query token (a decode step)
]


@pytest.mark.parametrize("batch,heads,kv_heads,q_len,kv_len,head_dim,causal,dtype", CASES)
def test_matches_reference(batch, heads, kv_heads, q_len, kv_len, head_dim, causal, dtype):
    q, k, v = inputs(batch, heads, kv_heads, q_len, kv_len, head_dim, dtype, seed=q_len * 7 + kv_len)
    run_and_compare(q, k, v, causal, seed=q_len)


def test_explicit_scale():
    q, k, v = inputs(1, 2, 1, 21, 21, 32, F32, seed=3)
    run_and_compare(q, k, v, causal=True, scale=0.3)


def test_strided_inputs_in_hf_layout():
    """transformers hands over (batch, seq, heads, dim) projections transposed, not copied."""
    gen = torch.Generator().manual_seed(5)
    q = torch.randn(2, 23, 4, 32, generator=gen).to(DEVICE).transpose(1, 2).requires_grad_()
    k = torch.randn(2, 23, 2, 32, generator=gen).to(DEVICE).transpose(1, 2).requires_grad_()
    v = torch.randn(2, 23, 2, 32, generator=gen).to(DEVICE).transpose(1, 2).requires_grad_()
    assert not q.is_contiguous()
    run_and_compare(q, k, v, causal=True)


def test_padding_mask_and_fully_masked_rows():
    """Left padding as transformers builds it: batch row 1 has 5 pad tokens, whose query rows see nothing."""
    batch, q_len = 2, 26
    q, k, v = inputs(batch, 4, 2, q_len, q_len, 16, F32, seed=11)
    keep = torch.ones(batch, q_len, dtype=torch.bool)
    keep[1, :5] = False
    mask = torch.ones(q_len, q_len, dtype=torch.bool).tril()[None, None] & keep[:, None, None, :]
    out = run_and_compare(q, k, v, causal=False, mask=mask.to(DEVICE))
    assert torch.all(out[1, :, :5] == 0), "a row with no allowed key must be zero, not NaN"
    assert torch.isfinite(q.grad).all() and torch.isfinite(k.grad).all()


def test_mask_and_causal_combine():
    """A sliding window given as a mask on top of causal=True."""
    q_len = 40
    q, k, v = inputs(1, 2, 1, q_len, q_len, 16, F16, seed=13)
    i = torch.arange(q_len)
    window = (i[:, None] - i[None, :]) < 8
    run_and_compare(q, k, v, causal=True, mask=window.to(DEVICE))


def test_causal_skips_nothing_it_needs():
    """Causal attention over the first row is that row's value: a cheap check on the diagonal blocks."""
    q, k, v = inputs(1, 1, 1, 40, 40, 16, F32, seed=17)
    out = attention(q, k, v, causal=True)
    torch.testing.assert_close(out[0, 0, 0], v[0, 0, 0].detach())


@pytest.mark.parametrize("change,message", [
    (dict(kv_heads=4), "multiple of KV heads"),
    (dict(dtype_k=torch.float64), "one dtype"),
    (dict(head_dim=300), "head dim 300"),
    (dict(mask=torch.zeros(1, 1, 9, 9)), "boolean"),
    (dict(mask=torch.ones(1, 1, 5, 9, dtype=torch.bool)), "does not broadcast"),
])
def test_rejects_bad_input(change, message):
    head_dim = change.get("head_dim", 16)
    q = torch.randn(1, 6, 9, head_dim, device=DEVICE)
    k = torch.randn(1, change.get("kv_heads", 2), 9, head_dim, device=DEVICE, dtype=change.get("dtype_k", F32))
    mask = change.get("mask")
    with pytest.raises(ValueError, match=message):
        attention(q, k, k.clone(), mask=None if mask is None else mask.to(DEVICE))


@pytest.mark.gpu
@pytest.mark.parametrize("causal", [True, False])
def test_bf16_on_gpu_at_real_size(causal):
    """The compiled bf16 path (the interpreter upcasts bf16 dots) on a Llama-like shape."""
    q, k, v = inputs(2, 16, 4, 1000, 1000, 128, BF16, seed=23)
    run_and_compare(q, k, v, causal=causal)


def test_reference_is_softmax_attention():
    """The reference itself, against the textbook formula on one head."""
    q, k, v = (torch.randn(1, 1, 5, 8, dtype=torch.float64) for _ in range(3))
    scores = (q[0, 0] @ k[0, 0].T) / math.sqrt(8)
    scores = scores.masked_fill(torch.ones(5, 5, dtype=torch.bool).triu(1), float("-inf"))
    expected = torch.softmax(scores, -1) @ v[0, 0]
    torch.testing.assert_close(attention_reference(q, k, v, causal=True)[0, 0], expected)


def test_autotuners_are_the_tuned_kernels_launches_use():
    from kernels.attention import FWD_CONFIGS, _tuned, autotuners

    tuned = autotuners()
    assert set(tuned) == {"attention.fwd", "attention.dkdv", "attention.dq"}
    assert tuned["attention.fwd"] is _tuned("fwd", "interpreter")
    assert [(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) for c in tuned["attention.fwd"].configs] == \
        [c[:2] for c in FWD_CONFIGS["interpreter"]]
