"""Decode attention (split-K, GQA, contiguous and paged caches) vs the float64 definition.

Cache positions past each sequence's length, and pages no sequence owns, are
poisoned with NaN: reading any of them fails the test. Outputs are allocated
NaN-poisoned too, so an element the kernels forget to write fails as well.
"""

import pytest
import torch

from kernels.decode_attention import decode_attention, decode_attention_reference

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16
TOL = {F32: 2e-5, F16: 4e-3, BF16: 3e-2}


pytestmark = pytest.mark.usefixtures("poisoned_outputs")  # tests/kernels/conftest.py


def make(batch, heads, kv_heads, q_len, head_dim, capacity, lengths, dtype, page_size=0, seed=0):
    """q, caches, lengths and block table; every cache slot no sequence may read is NaN."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(dtype)

    q = rand(batch, heads, q_len, head_dim)
    table = None
    if page_size:
        pages_per_seq = capacity // page_size
        spare = 3  # pages that belong to nobody
        k, v = (rand(batch * pages_per_seq + spare, page_size, kv_heads, head_dim) for _ in range(2))
        table = torch.randperm(batch * pages_per_seq + spare, generator=gen)[:batch * pages_per_seq]
        table = table.reshape(batch, pages_per_seq).int()
        owned = torch.zeros(k.shape[:2], dtype=torch.bool)
        for b, n in enumerate(lengths):
            pos = torch.arange(n)
            owned[table[b, pos // page_size].long(), pos % page_size] = True
        k[~owned], v[~owned] = float("nan"), float("nan")
    else:
        k, v = (rand(batch, kv_heads, capacity, head_dim) for _ in range(2))
        for b, n in enumerate(lengths):
            k[b, :, n:], v[b, :, n:] = float("nan"), float("nan")
    lengths = torch.tensor(lengths, dtype=torch.int32)
    to = {"device": DEVICE}
    return q.to(**to), k.to(**to), v.to(**to), lengths.to(**to), None if table is None else table.to(**to)


def check(q, k, v, lengths, table=None, mask=None, splits=None, scale=None):
    out = decode_attention(q, k, v, lengths, scale=scale, block_table=table, mask=mask, num_splits=splits)
    exact = decode_attention_reference(q.double(), k.double(), v.double(), lengths, scale=scale,
                                       block_table=table, mask=mask)
    assert not torch.isnan(out).any(), "NaN: a poisoned cache slot was read or an output never written"
    err = (out.double() - exact).abs().max().item() / exact.abs().max().item()
    assert err <= TOL[q.dtype], f"relative error {err:.2e}"
    return out


@pytest.mark.parametrize("batch,heads,kv_heads,q_len,head_dim,capacity,lengths,dtype,splits", [
    (2, 4, 2, 1, 32, 100, [37, 100], F32, None),         # ragged lengths, GQA 2
    (3, 8, 1, 1, 64, 64, [1, 20, 64], F16, 3),            # GQA 8, a one-token sequence
    (1, 32, 8, 1, 128, 80, [77], F32, 5),                 # Llama-3-like heads, many splits
    (2, 5, 5, 1, 16, 40, [40, 9], BF16, 2),               # odd head count, MHA
    (2, 6, 3, 4, 24, 48, [17, 48], F32, 2),               # 4 new tokens (speculative), head dim 24
    (1, 4, 1, 8, 64, 64, [64], F16, 1),                   # 8 new tokens x GQA 4 = 32 rows, one split
])
def test_contiguous_cache(batch, heads, kv_heads, q_len, head_dim, capacity, lengths, dtype, splits):
    check(*make(batch, heads, kv_heads, q_len, head_dim, capacity, lengths, dtype, seed=capacity), splits=splits)


@pytest.mark.parametrize("page_size,dtype,q_len", [(16, F32, 1), (8, BF16, 2), (32, F16, 1)])
def test_paged_cache_with_shuffled_pages(page_size, dtype, q_len):
    q, k, v, lengths, table = make(3, 6, 2, q_len, 32, 96, [5, 96, 50], dtype, page_size=page_size, seed=page_size)
    check(q, k, v, lengths, table=table, splits=3)


def test_paged_equals_contiguous():
    q, k, v, lengths, table = make(2, 4, 2, 1, 32, 64, [30, 64], F32, page_size=16, seed=9)
    pos = torch.arange(64, device=DEVICE)
    contiguous = [torch.nan_to_num(c[table[:, pos // 16].long(), pos % 16].permute(0, 2, 1, 3)) for c in (k, v)]
    paged = decode_attention(q, k, v, lengths, block_table=table)
    torch.testing.assert_close(paged, decode_attention(q, *contiguous, lengths), rtol=1e-5, atol=1e-6)


def test_mask_and_scale():
    q, k, v, lengths, _ = make(2, 4, 2, 2, 16, 48, [20, 48], F32, seed=4)
    mask = torch.ones(2, 2, 48, dtype=torch.bool, device=DEVICE)
    mask[1, :, :7] = False  # left padding of the second sequence
    check(q, k, v, lengths, mask=mask, scale=0.2)


def test_split_count_does_not_change_the_result():
    q, k, v, lengths, _ = make(2, 4, 2, 1, 32, 128, [100, 128], F32, seed=5)
    one = decode_attention(q, k, v, lengths, num_splits=1)
    for splits in (2, 7, 8):
        torch.testing.assert_close(decode_attention(q, k, v, lengths, num_splits=splits), one, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("change,message", [
    (dict(lengths=torch.tensor([3.0])), "lengths"),
    (dict(heads=6), "multiple of KV heads"),
    (dict(mask=torch.ones(1, 1, 16)), "mask must be boolean"),
])
def test_rejects_bad_input(change, message):
    q = torch.randn(1, change.get("heads", 4), 1, 16, device=DEVICE)
    k = torch.randn(1, 4 if "heads" in change else 2, 16, 16, device=DEVICE)
    lengths = change.get("lengths", torch.tensor([16], dtype=torch.int32)).to(DEVICE)
    mask = change.get("mask")
    with pytest.raises(ValueError, match=message):
        decode_attention(q, k, k.clone(), lengths, mask=None if mask is None else mask.to(DEVICE))


@pytest.mark.gpu
def test_bf16_on_gpu_at_real_size():
    """The compiled bf16 path at Llama-3.1-8B heads and a long, ragged context."""
    check(*make(4, 32, 8, 1, 128, 8192, [8192, 5000, 1, 777], BF16, seed=1))
    check(*make(4, 32, 8, 1, 128, 8192, [8192, 5000, 1, 777], BF16, page_size=16, seed=2))


def test_autotuners_are_the_tuned_kernels_launches_use():
    from kernels.decode_attention import _tuned_split, autotuners

    assert autotuners() == {"decode_attention.split": _tuned_split("interpreter")}


# ----------------------------------------------------------------------------- quantized caches

from kernels.decode_attention import QUANTIZED_KV_DTYPES, dequantize_kv, quantize_kv  # noqa: E402

I8, F8 = torch.int8, torch.float8_e4m3fn


def quantized(q, k, v, kv_dtype, per_tensor=False):
    """The caches quantized per (token, KV head), with the NaN-poisoned slots kept poisoned: a NaN slot
    gets a NaN scale, so reading it still fails."""
    (kq, ks), (vq, vs) = (quantize_kv(torch.nan_to_num(x), kv_dtype, per_tensor) for x in (k, v))
    if not per_tensor:
        ks[torch.isnan(k).any(-1)], vs[torch.isnan(v).any(-1)] = float("nan"), float("nan")
    return kq, vq, ks, vs


def check_quantized(q, k, v, lengths, kv_dtype, table=None, mask=None, splits=None, per_tensor=False):
    kq, vq, ks, vs = quantized(q, k, v, kv_dtype, per_tensor)
    out = decode_attention(q, kq, vq, lengths, block_table=table, mask=mask, num_splits=splits, k_scale=ks,
                           v_scale=vs)
    assert out.dtype == q.dtype and not torch.isnan(out).any(), "NaN: a poisoned slot was read or never written"
    exact = decode_attention_reference(q.double(), kq, vq, lengths, block_table=table, mask=mask,
                                       k_scale=ks.double(), v_scale=vs.double())
    err = (out.double() - exact).abs().max().item() / exact.abs().max().item()
    assert err <= TOL[q.dtype], f"relative error {err:.2e} against the dequantized definition"
    return out, exact


@pytest.mark.parametrize("kv_dtype", QUANTIZED_KV_DTYPES)
@pytest.mark.parametrize("batch,heads,kv_heads,q_len,head_dim,capacity,lengths,dtype,page_size", [
    (2, 4, 2, 1, 40, 100, [37, 100], F32, 0),    # head dim not a power of two, ragged
    (3, 8, 2, 2, 64, 64, [5, 33, 64], BF16, 0),   # bf16 compute, 2 new tokens
    (2, 6, 3, 1, 24, 64, [17, 64], F16, 16),      # paged, odd head dim
    (1, 8, 1, 4, 32, 96, [90], BF16, 8),          # paged, GQA 8, speculative
])
def test_quantized_cache_matches_the_dequantized_definition(kv_dtype, batch, heads, kv_heads, q_len, head_dim,
                                                            capacity, lengths, dtype, page_size):
    q, k, v, lens, table = make(batch, heads, kv_heads, q_len, head_dim, capacity, lengths, dtype, page_size,
                                seed=capacity + page_size)
    check_quantized(q, k, v, lens, kv_dtype, table=table, splits=2)


@pytest.mark.parametrize("kv_dtype", QUANTIZED_KV_DTYPES)
def test_per_tensor_scale_and_mask(kv_dtype):
    q, k, v, lens, _ = make(2, 4, 2, 1, 32, 48, [48, 30], F32, seed=7)
    mask = torch.rand(2, 1, 48, generator=torch.Generator().manual_seed(1)).to(DEVICE) > 0.3
    kq, vq, ks, vs = quantized(q, torch.nan_to_num(k), torch.nan_to_num(v), kv_dtype, per_tensor=True)
    assert ks.shape == (1,)
    out = decode_attention(q, kq, vq, lens, mask=mask, k_scale=ks, v_scale=vs)
    exact = decode_attention_reference(q.double(), kq, vq, lens, mask=mask, k_scale=ks.double(), v_scale=vs.double())
    assert (out.double() - exact).abs().max().item() <= 1e-5 * exact.abs().max().item()


@pytest.mark.parametrize("kv_dtype, worst", [(I8, 0.02), (F8, 0.08)])
def test_quantization_error_against_the_float_cache_is_what_the_format_allows(kv_dtype, worst):
    """Not a kernel check (that is above) but the trade the format makes: int8 with a scale per token keeps
    attention within ~1% of the float cache, e4m3 (3 mantissa bits) within a few %."""
    q, k, v, lens, _ = make(2, 8, 2, 1, 64, 128, [128, 77], F32, seed=3)
    k, v = torch.nan_to_num(k), torch.nan_to_num(v)
    out, _ = check_quantized(q, k, v, lens, kv_dtype)
    exact = decode_attention_reference(q.double(), k.double(), v.double(), lens)
    err = (out.double() - exact).abs().max().item() / exact.abs().max().item()
    assert 0 < err <= worst


def test_quantize_kv_round_trip_and_bounds():
    x = torch.randn(3, 2, 5, 16, generator=torch.Generator().manual_seed(0))
    x[0, 0, 0] = 0.0  # an all-zero vector keeps a finite scale
    values, scale = quantize_kv(x, I8)
    assert values.dtype == I8 and scale.shape == (3, 2, 5) and values.abs().max() == 127
    assert torch.isfinite(scale).all() and (dequantize_kv(values, scale, torch.float32)[0, 0, 0] == 0).all()
    err = (dequantize_kv(values, scale, torch.float32) - x).abs()
    assert (err <= scale[..., None] / 2 + 1e-7).all()  # round to nearest: at most half a step
    values, scale = quantize_kv(x, F8, per_tensor=True)
    assert values.dtype == F8 and scale.shape == (1,)
    assert values.float().abs().max() == torch.finfo(F8).max
    with pytest.raises(ValueError, match="int8 or float8_e4m3fn"):
        quantize_kv(x, torch.float16)


@pytest.mark.parametrize("change, message", [
    ("no_scale", "needs k_scale and v_scale"),
    ("scale_on_float", "only with them"),
    ("mixed", "both int8 or float8_e4m3fn"),
    ("scale_shape", "one per token and KV head"),
    ("scale_dtype", "must be float32"),
])
def test_quantized_cache_rejects_bad_input(change, message):
    q, k, v, lens, _ = make(1, 4, 2, 1, 16, 32, [32], F32)
    kq, vq, ks, vs = quantized(q, torch.nan_to_num(k), torch.nan_to_num(v), I8)
    args = {"no_scale": (kq, vq, None, None), "scale_on_float": (k, v, ks, vs), "mixed": (kq, vq.view(torch.uint8).to(F8), ks, vs),
            "scale_shape": (kq, vq, ks[:, :, :16], vs), "scale_dtype": (kq, vq, ks.double(), vs)}[change]
    with pytest.raises(ValueError, match=message):
        decode_attention(q, args[0], args[1], lens, k_scale=args[2], v_scale=args[3])
