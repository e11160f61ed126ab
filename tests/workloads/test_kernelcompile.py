"""workloads.kernelcompile: the cases, what they launch, and (marker ``compile``) the kernels compiled for
sm_80 and sm_90 with Triton's bundled ptxas: every autotune candidate spill-free and fitting.

The capture tests run here, in the interpreter process, since capturing only records
launches on meta tensors. The compile test spawns workers (the interpreter cannot
compile) and takes about a minute on two cores; ``llmbench kernel compile`` is the
full sweep (every case, sm_100, other dtypes).
"""

import pytest
import torch

from kernels import resources
from kernels.attention import BWD_DKDV_CONFIGS, BWD_DQ_CONFIGS, FWD_CONFIGS
from kernels.decode_attention import SPLIT_CONFIGS
from workloads import kernelcompile
from workloads.kernelcompile import CASES, Case, cases, without_clean


def test_cases_cover_every_family_case_dtype_and_head_dim():
    found = cases(["attention", "decode_attention", "int8_linear"], ["bf16", "fp16"], [64, 128])
    assert len(found) == (len(CASES["attention"]) + len(CASES["decode_attention"])) * 2 * 2 + 2 * 2
    assert Case("decode_attention", "paged", "fp16", 128) in found
    assert Case("int8_linear", "decode", "bf16", None) in found  # no head dim: once per dtype
    assert {c.family for c in cases(["decode_attention"], ["bf16"], [64])} == {"decode_attention"}


def _names(launches):
    return [resources.kernel_name(launch) for launch in launches]


@pytest.mark.parametrize("case", list(CASES["attention"]))
def test_attention_cases_capture_forward_and_backward_as_launched_on_the_gpu(case):
    launches = kernelcompile._capture(Case("attention", case, "bf16", 128), 90)
    assert _names(launches) == ["attention.fwd", "attention.bwd_delta", "attention.bwd_dkdv", "attention.bwd_dq"]
    fwd, delta, dkdv, dq = launches
    expected = FWD_CONFIGS["hopper"] if case != "mask" else [c for c in FWD_CONFIGS["hopper"] if c[4]]
    assert [(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages) for c in fwd.configs] == \
        [c[:4] for c in expected]
    assert len(dkdv.configs) == len([c for c in BWD_DKDV_CONFIGS["hopper"] if case != "mask" or c[4]])
    assert len(dq.configs) == len([c for c in BWD_DQ_CONFIGS["hopper"] if case != "mask" or c[4]])
    assert fwd.kwargs["HEAD_DIM"] == 128 and fwd.kwargs["BLOCK_D"] == 128
    assert fwd.kwargs["UPCAST"] is False  # a GPU launch: bf16 dots are not upcast as in the interpreter
    assert fwd.kwargs["CAUSAL"] is (case != "noncausal") and fwd.kwargs["HAS_MASK"] is (case == "mask")
    assert delta.kwargs["BLOCK_M"] == 128  # the GPU's block, not the interpreter's 16
    group = 4 if case == "gqa4" else 1
    assert fwd.args[fwd.kernel.arg_names.index("GROUP")] == group
    assert all(isinstance(a, torch.Tensor) and a.device.type == "meta"
               for a in fwd.args[:6])  # Q, K, V, O, LSE, MASK: shapes without data


@pytest.mark.parametrize("capability, table", [(80, "ampere"), (90, "hopper"), (100, "hopper"), (86, "ampere")])
def test_decode_cases_use_the_table_of_the_captured_arch(capability, table):
    launches = kernelcompile._capture(Case("decode_attention", "paged", "bf16", 64), capability)
    assert _names(launches) == ["decode_attention.split", "decode_attention.combine"]
    split = launches[0]
    assert [(c.kwargs["BLOCK_N"], c.num_warps, c.num_stages) for c in split.configs] == SPLIT_CONFIGS[table]
    assert split.kwargs["PAGE_SIZE"] == kernelcompile.PAGE_SIZE and split.kwargs["GROUP"] == 4


def test_speculative_and_masked_decode_cases():
    spec = kernelcompile._capture(Case("decode_attention", "spec4", "fp16", 128), 90)[0]
    assert spec.kwargs["GROUP"] == 8 and spec.kwargs["BLOCK_H"] == 32 and spec.kwargs["PAGE_SIZE"] == 0
    masked = kernelcompile._capture(Case("decode_attention", "mask", "fp32", 128), 90)[0]
    assert masked.kwargs["HAS_MASK"] is True and masked.kwargs["PRECISION"] == "ieee"
    tf32 = kernelcompile._capture(Case("decode_attention", "mask", "tf32", 128), 90)[0]
    assert tf32.kwargs["PRECISION"] == "tf32" and torch.get_float32_matmul_precision() == "highest"  # restored


def test_compile_case_refuses_to_run_under_the_interpreter():
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        kernelcompile.compile_case(Case("decode_attention", "paged", "bf16", 64), "sm_90")


def _record(kernel, arch, head_dim, case, status="ok", clean=True):
    return {"kernel": kernel, "arch": arch, "dtype": "bf16", "head_dim": head_dim, "case": case, "status": status,
            "metrics": {"clean": clean} if status == "ok" else {}}


def test_without_clean_names_the_combinations_where_every_candidate_spills_or_fails():
    records = [_record("attention.fwd", "sm_90", 128, "causal", clean=False),
               _record("attention.fwd", "sm_90", 128, "causal", clean=True),
               _record("attention.fwd", "sm_90", 128, "mask", clean=False),
               _record("attention.fwd", "sm_90", 128, "mask", status="failed"),
               _record("attention.fwd", "sm_80", 128, "causal", clean=False),
               _record("attention.fwd", "sm_80", 64, "causal", clean=True)]
    assert without_clean(records) == [("attention.fwd", "sm_90", "bf16", 128, "mask"),
                                      ("attention.fwd", "sm_80", "bf16", 128, "causal")]
    assert without_clean(records[:2]) == []


@pytest.fixture(scope="module")
def compiled():
    """sm_80 and sm_90, bf16: every candidate at head dim 128 (the hard one), the first at 64; the int8-cache
    decode kernel at 128."""
    missing = resources.ptxas_missing()
    if missing:
        pytest.skip(missing)
    tasks = [(Case(family, case, "bf16", head_dim), arch, head_dim == 64)
             for family, case in (("attention", "causal"), ("decode_attention", "paged"))
             for head_dim in (128, 64) for arch in ("sm_80", "sm_90")]
    tasks += [(Case(family, case, "bf16", head_dim), arch, False) for arch in ("sm_80", "sm_90")
              for family, case, head_dim in (("decode_attention", "int8", 128), ("int8_linear", "decode", None),
                                             ("int8_linear", "prefill", None))]
    return [row for rows in kernelcompile.run(tasks) for row in rows]


@pytest.mark.compile
def test_every_kernel_compiles_for_sm80_and_sm90(compiled):
    failed = [(r["point"]["kernel"], r["point"]["arch"], r["point"]["candidate"], r["error"])
              for r in compiled if r["status"] != "ok"]
    assert not failed
    kernels = {(r["point"]["kernel"], r["point"]["arch"], r["point"]["head_dim"]) for r in compiled}
    assert len(kernels) == 6 * 2 * 2 + 2  # fwd, delta, dkdv, dq, split, combine x arch x head dim; int8_linear


@pytest.mark.compile
def test_every_candidate_fits_and_spills_nothing(compiled):
    records = [{**r["point"], "status": r["status"], "metrics": r["metrics"]} for r in compiled]
    assert without_clean(records) == []
    spilling = [(r["kernel"], r["arch"], r["head_dim"], r["candidate"], r["metrics"]["spill_stores_bytes"],
                 r["metrics"]["shared_bytes"]) for r in records if not r["metrics"]["clean"]]
    assert not spilling, "autotune candidates that spill or do not fit (run `llmbench kernel compile`)"
    for r in records:
        m = r["metrics"]
        assert 0 < m["registers"] <= 255 and m["programs_per_sm"] >= 1 and 0 < m["occupancy"] <= 1


def test_quantized_cache_cases_launch_the_quantized_kernel():
    int8 = kernelcompile._capture(Case("decode_attention", "int8", "bf16", 128), 90)[0]
    fp8 = kernelcompile._capture(Case("decode_attention", "fp8", "bf16", 128), 90)[0]
    assert int8.kwargs["QUANTIZED"] is True and int8.args[1].dtype == torch.int8 and int8.kwargs["PAGE_SIZE"] == 0
    assert fp8.kwargs["QUANTIZED"] is True and fp8.args[1].dtype == torch.float8_e4m3fn
    assert fp8.kwargs["PAGE_SIZE"] == kernelcompile.PAGE_SIZE
    plain = kernelcompile._capture(Case("decode_attention", "contiguous", "bf16", 128), 90)[0]
    assert plain.kwargs["QUANTIZED"] is False


def test_fp8_before_sm89_is_skipped_not_compiled(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # the skip comes before anything is captured or compiled
    (row,) = kernelcompile.compile_case(Case("decode_attention", "fp8", "bf16", 64), "sm_80")
    assert row["status"] == "skipped" and "sm_89" in row["error"]
    assert without_clean([{**row["point"], "status": "skipped", "metrics": {}}]) == []


def test_int8_linear_cases_capture_the_decode_and_prefill_launches():
    from kernels.int8_linear import DECODE_CONFIGS, PREFILL_CONFIGS

    (decode,) = kernelcompile._capture(Case("int8_linear", "decode", "bf16", None), 90)
    (prefill,) = kernelcompile._capture(Case("int8_linear", "prefill", "bf16", None), 90)
    assert resources.kernel_name(decode) == "int8_linear.int8_linear"
    assert len(decode.configs) == len(DECODE_CONFIGS["hopper"]) and len(prefill.configs) == len(PREFILL_CONFIGS["hopper"])
    assert decode.args[1].dtype == torch.int8 and decode.args[5:8] == (1, 14336, 4096)
    assert prefill.args[5] == 512


@pytest.mark.parametrize("capability, table", [(80, "ampere"), (90, "hopper")])
def test_masked_launches_choose_among_the_candidates_marked_for_masks(capability, table):
    def shapes(launch):
        return [(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages) for c in launch.configs]

    plain = kernelcompile._capture(Case("attention", "causal", "bf16", 128), capability)
    masked = kernelcompile._capture(Case("attention", "mask", "bf16", 128), capability)
    for i, configs in ((0, FWD_CONFIGS), (2, BWD_DKDV_CONFIGS), (3, BWD_DQ_CONFIGS)):
        assert shapes(plain[i]) == [c[:4] for c in configs[table]]
        assert shapes(masked[i]) == [c[:4] for c in configs[table] if c[4]] and masked[i].configs
