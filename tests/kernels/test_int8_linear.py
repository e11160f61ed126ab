"""int8-weight linear layer vs the float64 definition on dequantized weights.

Odd shapes (in/out features not multiples of the tiles, 1 to 40 rows so both the decode
and the prefill launch run), fp32/fp16/bf16 activations, with and without bias, and a
NaN-poisoned output buffer.
"""

import pytest
import torch

from kernels.int8_linear import DECODE_ROWS, int8_linear, int8_linear_reference, quantize_weight

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16
TOL = {F32: 1e-5, F16: 2e-3, BF16: 2e-2}


pytestmark = pytest.mark.usefixtures("poisoned_outputs")  # tests/kernels/conftest.py


def make(shape, out_features, dtype, bias, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=gen).to(dtype)
    w, scale = quantize_weight(torch.randn(out_features, shape[-1], generator=gen) / shape[-1] ** 0.5)
    b = torch.randn(out_features, generator=gen).to(dtype) if bias else None
    to = {"device": DEVICE}
    return x.to(**to), w.to(**to), scale.to(**to), None if b is None else b.to(**to)


@pytest.mark.parametrize("shape,out_features,dtype,bias", [
    ((1, 70), 45, F32, False),       # decode, one row, nothing a multiple of a tile
    ((3, 1, 96), 33, BF16, True),    # decode batch 3, bias, leading dims kept
    ((16, 40), 64, F16, True),       # the largest decode launch
    ((2, 20, 48), 50, F32, True),    # prefill: 40 rows
    ((17, 33), 17, BF16, False),     # just past the decode rows
])
def test_matches_the_dequantized_definition(shape, out_features, dtype, bias):
    x, w, scale, b = make(shape, out_features, dtype, bias, seed=out_features)
    y = int8_linear(x, w, scale, b)
    assert y.shape == (*shape[:-1], out_features) and y.dtype == dtype
    assert not torch.isnan(y).any(), "an output element was never written"
    exact = int8_linear_reference(x.double(), w, scale.double(), None if b is None else b.double())
    err = (y.double() - exact).abs().max().item() / exact.abs().max().item()
    assert err <= TOL[dtype], f"relative error {err:.2e}"


def test_both_launches_are_used():
    assert DECODE_ROWS == 16  # the tests above straddle it: 1, 3, 16 rows decode; 17, 40 prefill


def test_quantize_weight_per_output_channel():
    w = torch.randn(6, 10, generator=torch.Generator().manual_seed(0))
    w[2] = 0.0
    q, scale = quantize_weight(w)
    assert q.dtype == torch.int8 and scale.shape == (6,) and torch.isfinite(scale).all()
    assert (q.abs().amax(dim=1)[[0, 1, 3, 4, 5]] == 127).all() and (q[2] == 0).all()
    assert ((q.float() * scale[:, None] - w).abs() <= scale[:, None] / 2 + 1e-7).all()


def test_int8_error_against_float_weights_is_small():
    """The trade the format makes: per-channel int8 keeps a linear layer within about 1% of its float result."""
    gen = torch.Generator().manual_seed(5)
    x, w = torch.randn(4, 256, generator=gen, dtype=torch.float64), torch.randn(128, 256, generator=gen,
                                                                                   dtype=torch.float64)
    q, scale = quantize_weight(w)
    err = (int8_linear_reference(x, q, scale.double()) - x @ w.T).abs().max() / (x @ w.T).abs().max()
    assert 0 < err < 0.01


@pytest.mark.parametrize("change, message", [
    ("float_weight", "weight must be int8"),
    ("wrong_k", "in_features=70"),
    ("scale_shape", "one per output channel"),
    ("scale_dtype", "scale must be float32"),
    ("bias_shape", "bias must be"),
    ("x_int", "fp16, bf16 or fp32 activations"),
])
def test_rejects_bad_input(change, message):
    x, w, scale, b = make((2, 70), 30, F32, True)
    args = {"float_weight": (x, w.float(), scale, b), "wrong_k": (x, w[:, :60], scale, b),
            "scale_shape": (x, w, scale[:10], b), "scale_dtype": (x, w, scale.double(), b),
            "bias_shape": (x, w, scale, b[:5]), "x_int": (x.int(), w, scale, b)}[change]
    with pytest.raises(ValueError, match=message):
        int8_linear(*args)


@pytest.mark.gpu
@pytest.mark.parametrize("rows", [1, 8, 512])
def test_bf16_on_gpu_at_llama_8b_size(rows):
    x, w, scale, _ = make((rows, 4096), 14336, BF16, False)
    y = int8_linear(x, w, scale)
    exact = int8_linear_reference(x.float(), w, scale)
    assert ((y.float() - exact).abs().max() / exact.abs().max()).item() < 2e-2
