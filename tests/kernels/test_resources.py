"""kernels.resources: occupancy by hand, ptxas reports, arch names, names, the autotuner's chosen candidate.

Compiling for real targets is slow (seconds per candidate) and is tested, with the
``compile`` marker, in tests/workloads/test_kernelcompile.py; here the pieces around
it are checked against hand calculations.
"""

from types import SimpleNamespace

import pytest
import triton
from triton.runtime.autotuner import Autotuner

from kernels import resources
from kernels.common import Launch
from kernels.resources import ARCHS, occupancy, parse_arch, parse_ptxas_log

PTXAS_LOG = """ptxas-blackwell info    : 11 bytes gmem
ptxas-blackwell info    : Compiling entry function '_attn_bwd_dkdv' for 'sm_90a'
ptxas-blackwell info    : Function properties for _attn_bwd_dkdv
    1024 bytes stack frame, 996 bytes spill stores, 1288 bytes spill loads
ptxas-blackwell info    : Used 255 registers, used 1 barriers
ptxas-blackwell info    : Compile time = 429.659 ms
"""


def test_parse_ptxas_log():
    assert parse_ptxas_log(PTXAS_LOG) == (255, 996, 1288, 1024)
    clean = PTXAS_LOG.replace("1024 bytes stack frame, 996 bytes spill stores, 1288", "0 bytes stack frame, 0 bytes "
                              "spill stores, 0").replace("255 registers", "181 registers")
    assert parse_ptxas_log(clean) == (181, 0, 0, 0)
    with pytest.raises(ValueError, match="no resource usage"):
        parse_ptxas_log("ptxas fatal   : Unresolved extern function")


@pytest.mark.parametrize("registers, shared, warps, capability, expected", [
    # 181 regs -> 23 x 256 = 5888 per warp -> 11 warps by registers -> 1 program of 8 warps
    (181, 131072, 8, 90, (1, 8)),
    # 102 regs -> 13 x 256 = 3328 per warp -> 19 warps -> 4 programs of 4; shared: 233472 // (71680 + 1024) = 3
    (102, 71680, 4, 90, (3, 12)),
    # 24 regs -> 768 per warp -> 85 warps -> 21 programs by registers; warps: 64 // 4 = 16 -> 16 programs
    (24, 2048, 4, 90, (16, 64)),
    # the same on sm_86: 48 warps -> 12 programs
    (24, 2048, 4, 86, (12, 48)),
    # 32 regs -> 1024 per warp -> 64 warps; blocks of 1 warp: 32 resident blocks at most
    (32, 0, 1, 80, (32, 32)),
    # 229376 bytes of shared memory fit sm_90 (227 KB a block) but not sm_80 (163 KB)
    (246, 229376, 8, 90, (1, 8)),
    (246, 229376, 8, 80, (0, 0)),
    (255, 1024, 16, 90, (0, 0)),  # 16 warps x 8192 registers > 65536: does not fit
])
def test_occupancy_by_hand(registers, shared, warps, capability, expected):
    assert occupancy(capability, registers, shared, warps) == expected


@pytest.mark.parametrize("text, expected", [("sm_90", 90), ("sm90", 90), ("90", 90), ("9.0", 90), ("SM_100", 100),
                                            ("sm_90a", 90), (" sm_80 ", 80), ("12.0", 120)])
def test_parse_arch(text, expected):
    assert parse_arch(text) == expected


@pytest.mark.parametrize("text", ["sm_75", "hopper", "", "sm_", "9", "1000"])
def test_parse_arch_refuses_unknown_names(text):
    with pytest.raises(ValueError, match="known: sm_80"):
        parse_arch(text)


def test_arch_table_is_consistent():
    for capability, arch in ARCHS.items():
        assert arch.name == f"sm_{capability}"
        assert arch.shared_per_block <= arch.shared_per_sm and arch.max_warps * 32 <= 2048
        assert arch.registers == 65536


def test_names():
    config = triton.Config({"BLOCK_M": 128, "BLOCK_N": 64}, num_warps=8, num_stages=3)
    assert resources.candidate_name(config) == "BLOCK_M=128 BLOCK_N=64 w8 s3"
    assert resources.candidate_name(triton.Config({}, num_warps=4, num_stages=3)) == "w4 s3"

    def kernel(module, name):
        return Launch(SimpleNamespace(__module__=module, __name__=name), [], (), {})

    assert resources.kernel_name(kernel("kernels.attention", "_attn_fwd")) == "attention.fwd"
    assert resources.kernel_name(kernel("kernels.attention", "_bwd_delta")) == "attention.bwd_delta"
    assert resources.kernel_name(kernel("kernels.decode_attention", "_decode_split")) == "decode_attention.split"


def test_resources_clean_needs_a_fit_and_no_spill():
    base = dict(registers=200, spill_stores_bytes=0, spill_loads_bytes=0, stack_bytes=0, shared_bytes=1, warps=4,
                programs_per_sm=1, warps_per_sm=4, occupancy=0.06, fits=True, compile_s=1.0, cached=False)
    assert resources.Resources(**base).clean
    assert not resources.Resources(**{**base, "spill_stores_bytes": 4}).clean
    assert not resources.Resources(**{**base, "spill_loads_bytes": 4}).clean
    assert not resources.Resources(**{**base, "fits": False}).clean


def _compiled(warps, stages, block_m, n_regs, n_spills, shared):
    """What Triton keeps per compiled kernel, as far as ``chosen`` reads it."""
    return SimpleNamespace(metadata=SimpleNamespace(num_warps=warps, num_stages=stages, shared=shared),
                           src=SimpleNamespace(constants={(1,): block_m, (2,): 64}), n_regs=n_regs, n_spills=n_spills)


def test_chosen_reports_the_compiled_kernel_of_the_candidate_the_autotuner_kept():
    fn = SimpleNamespace(__name__="_attn_fwd", arg_names=["Q", "BLOCK_M", "BLOCK_N"], fn=lambda: None,
                         device_caches={0: ({"a": _compiled(4, 3, 64, 168, 0, 114688),
                                             "b": _compiled(8, 3, 128, 181, 0, 131072)}, None)})
    configs = [triton.Config({"BLOCK_M": 64, "BLOCK_N": 64}, num_warps=4, num_stages=3),
               triton.Config({"BLOCK_M": 128, "BLOCK_N": 64}, num_warps=8, num_stages=3)]
    tuned = Autotuner(fn, ["Q"], configs, key=[], reset_to_zero=None, restore_value=None)
    assert resources.chosen(tuned) == []  # nothing tuned yet
    tuned.cache[(4096,)] = configs[1]
    assert resources.chosen(tuned) == [{"kernel": "_attn_fwd", "key": [4096], "candidate": "BLOCK_M=128 BLOCK_N=64 w8 s3",
                                        "registers": 181, "spills": 0, "shared_bytes": 131072}]
    tuned.cache[(4096,)] = configs[0]
    assert resources.chosen(tuned)[0]["registers"] == 168
    assert resources.chosen(fn) == []  # a plain jit function has no choice to report


def test_ptxas_is_found_in_tritons_wheel():
    assert resources.ptxas_missing() is None
