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


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    real_empty = torch.empty

    def empty(*args, **kwargs):
        t = real_empty(*args, **kwargs)
        return t.fill_(float("nan")) if t.is_floating_point() else t

    monkeypatch.setattr(torch, "empty", empty)


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
