"""Report figures (harness/plots.py): each writes a PNG (and SVG on request) from small records and returns None with
nothing to plot; series never join engines or models, legends name values (not points) and stay short."""

import math

import pytest

from harness import plots
from harness.ceilings import Ceilings, spec_for
from harness.records import make_record

GPU = {"device_name": "NVIDIA H100 80GB HBM3", "device_type": "cuda", "host": "gpu-node"}


def decode(dtype, batch=1, prompt=128, rate=100.0, model="tiny-llama", engine=None, telemetry=None):
    elem = 4 if dtype == "fp32" else 2
    point = {"workload": "decode", "model": model, "dtype": dtype, "batch_size": batch, "prompt_len": prompt,
             "new_tokens": 16, **({"engine": engine} if engine else {})}
    derived = {"arithmetic_intensity": batch / elem * 2, "achieved_tflops": rate * 1e-3,
               "prefill_arithmetic_intensity": batch * prompt / elem * 2, "prefill_tflops": rate * 1e-2}
    return make_record(run_id="d", point=point, metrics={"tokens_per_s": rate},
                       cost={"bytes_per_step": 1e8 * elem}, derived=derived, env=GPU, telemetry=telemetry)


def attention(impl, seq, tflops, mode="fwd", causal=True, heads=8, kv_heads=8):
    point = {"workload": "attention", "attn": impl, "dtype": "bf16", "batch_size": 2, "heads": heads,
             "kv_heads": kv_heads, "seq_len": seq, "head_dim": 64, "causal": causal, "mode": mode}
    return make_record(run_id="a", point=point, metrics={"time_ms": 1.0}, derived={"achieved_tflops": tflops},
                       env=GPU)


@pytest.fixture()
def figures(monkeypatch):
    """The figures the plotting functions save, for a look at what they drew."""
    saved = []
    save = plots._save

    def keep(fig, out, stem):
        saved.append(fig)
        return save(fig, out, stem)

    monkeypatch.setattr(plots, "_save", keep)
    return saved


@pytest.fixture()
def drawn(monkeypatch):
    """The figures the plotting functions would save, not written (faster, for checks of the drawing only)."""
    saved = []

    def keep(fig, out, stem):
        saved.append(fig)
        plots.plt.close(fig)
        return stem

    monkeypatch.setattr(plots, "_save", keep)
    return saved


def assert_written(out, stem):
    png = out / f"{stem}.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    svg = out / f"{stem}.svg"
    assert (svg.stat().st_size > 1000 and "<svg" in svg.read_text()) if plots.SVG else not svg.exists()


def legend(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def ceilings():
    return Ceilings("NVIDIA H100 80GB HBM3", copy_gbps=3000.0, matmul_tflops={"bf16": 700.0, "fp32": 50.0},
                    spec=spec_for("NVIDIA H100 80GB HBM3"))


def test_roofline_writes_png_and_svg_on_request(tmp_path, figures, monkeypatch):
    monkeypatch.setattr(plots, "SVG", True)
    out = tmp_path / "plots" / "nested"  # created on demand
    records = [decode("bf16", 1), decode("fp32", 4, rate=50.0), decode("bf16", 1, model="tiny-qwen")]
    assert plots.roofline("H100", ceilings(), records, out, "roofline-0") == "roofline-0"
    assert_written(out, "roofline-0")
    (ax,) = figures[0].axes
    labels = legend(ax)
    assert any(t.startswith("measured fp32: 3000 GB/s, 50 TFLOP/s") for t in labels)
    assert any(t.startswith("spec bf16: 3350 GB/s") for t in labels)
    assert {"model: tiny-llama", "model: tiny-qwen", "decode steps (filled)", "prefill (hollow)"} <= set(labels)
    assert not any("b1" in t or "b4" in t for t in labels)  # values in the legend, not one entry per point
    assert not any(t.startswith("spec fp16") for t in labels)  # only precisions that were measured
    assert "marker: model" in ax.get_title()
    assert ax.get_xscale() == ax.get_yscale() == "log"


def test_roofline_without_a_spec(tmp_path, drawn):
    c = Ceilings("AMD EPYC (laptop)", copy_gbps=40.0, matmul_tflops={"fp32": 1.5})
    assert plots.roofline("cpu", c, [decode("fp32")], tmp_path, "r") == "r"
    assert not any(t.startswith("spec") for t in legend(drawn[0].axes[0]))


def test_roofline_nothing_to_plot(tmp_path):
    assert plots.roofline("H100", ceilings(), [], tmp_path, "r") is None
    assert plots.roofline("H100", None, [decode("bf16")], tmp_path, "r") is None
    assert plots.roofline("H100", Ceilings("x", matmul_tflops={"bf16": 1.0}), [decode("bf16")], tmp_path, "r") is None
    assert not list(tmp_path.iterdir())


def test_precision_comparison_writes_speedups(tmp_path, figures):
    records = [decode("bf16", rate=250.0), decode("fp16", rate=200.0), decode("fp32", rate=100.0),
               decode("bf16", batch=8, rate=900.0)]  # alone at its point: left out
    assert plots.precision_comparison("H100", records, tmp_path, "precisions-0") == "precisions-0"
    assert_written(tmp_path, "precisions-0")
    rates, sizes = figures[0].axes
    assert sorted(t.get_text() for t in rates.texts) == ["2.00x", "2.50x"]  # over fp32, wherever it is
    assert [t.get_text() for t in rates.get_xticklabels()] == ["b1"]  # named by what varies
    assert legend(rates) == ["fp32", "bf16", "fp16"]  # report order, not record order
    assert sorted(round(p.get_height() / 1e6) for p in sizes.patches) == [200, 200, 400]  # bytes per step
    assert sizes.get_yscale() == "log"  # a small model's bar stays visible


def test_precision_comparison_nothing_to_plot(tmp_path):
    assert plots.precision_comparison("H100", [], tmp_path, "p") is None
    one_each = [decode("bf16", batch=1), decode("fp32", batch=4)]
    assert plots.precision_comparison("H100", one_each, tmp_path, "p") is None
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("field, other", [("batch_size", "prompt_len"), ("prompt_len", "batch_size")])
def test_scaling_writes_one_line_per_model_precision_and_other(tmp_path, figures, field, other):
    records = [decode("bf16", **{field.split("_")[0]: x}, rate=10.0 * x) for x in (4, 1, 2)]
    records += [decode("fp32", **{field.split("_")[0]: x}, rate=5.0 * x) for x in (1, 8)]
    records.append(decode("fp16"))  # a single value: no line
    assert plots.scaling("H100", records, field, field, tmp_path, "s") == "s"
    assert_written(tmp_path, "s")
    (ax,) = figures[0].axes
    assert len(ax.lines) == 2
    xs = {tuple(x for x in line.get_xdata() if not math.isnan(x)) for line in ax.lines}
    assert xs == {(1, 2, 4), (1, 8)}  # sorted along the axis
    assert legend(ax) == ["dtype: fp32", "dtype: bf16"]


def test_scaling_nothing_to_plot(tmp_path):
    records = [decode("bf16"), decode("fp32")]
    assert plots.scaling("H100", records, "batch_size", "batch", tmp_path, "s") is None
    assert plots.scaling("H100", [], "prompt_len", "context", tmp_path, "s") is None
    # two batch sizes, but at different prompt lengths: no line spans two values
    records = [decode("bf16", batch=1, prompt=128), decode("bf16", batch=2, prompt=256)]
    assert plots.scaling("H100", records, "batch_size", "batch", tmp_path, "s") is None
    assert not list(tmp_path.iterdir())


def test_devices_writes_shared_points(tmp_path, figures):
    by_device = {"H100": [decode("bf16", rate=300.0), decode("fp32", rate=100.0)],
                 "laptop": [decode("bf16", rate=10.0), decode("bf16", batch=4, rate=20.0)]}
    assert plots.devices(by_device, tmp_path, "devices") == "devices"
    assert_written(tmp_path, "devices")
    (ax,) = figures[0].axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["tiny-llama b1 p128 n16\nbf16"]  # shared only
    assert legend(ax) == ["H100", "laptop"]
    assert sorted(p.get_height() for p in ax.patches) == [10.0, 300.0]


def test_devices_nothing_to_plot(tmp_path):
    assert plots.devices({}, tmp_path, "d") is None
    assert plots.devices({"H100": [decode("bf16")]}, tmp_path, "d") is None
    assert not list(tmp_path.iterdir())


def test_attention_one_panel_per_shape(tmp_path, figures):
    records = [attention(impl, seq, t * seq / 1024) for impl, t in (("sdpa-flash", 300.0), ("triton", 400.0))
               for seq in (2048, 512, 1024)]
    records += [attention("triton", seq, 100.0, mode="bwd") for seq in (512, 1024)]
    records += [attention("eager", seq, 20.0, causal=False, kv_heads=2) for seq in (512, 1024)]
    assert plots.attention("H100", records, 600.0, tmp_path, "attention-bf16") == "attention-bf16"
    assert_written(tmp_path, "attention-bf16")
    axes = figures[0].axes
    drawn = [ax for ax in axes if ax.axison]
    assert [ax.get_title() for ax in drawn] == [
        "fwd, causal, head dim 64",
        "fwd, non-causal, head dim 64, 8/2 heads",
        "bwd, causal, head dim 64",
    ]
    first = drawn[0]
    assert legend(first) == ["triton", "sdpa-flash", "measured matmul peak"]  # implementations in a fixed order
    assert list(first.lines[0].get_xdata()) == [512, 1024, 2048]
    assert "Fused attention, bf16: H100" in figures[0].texts[0].get_text()


def test_attention_without_a_peak_has_no_peak_line(tmp_path, drawn):
    records = [attention("triton", seq, 1.0) for seq in (256, 512)]
    assert plots.attention("cpu", records, None, tmp_path, "a") == "a"
    assert legend(drawn[0].axes[0]) == ["triton"]


def test_attention_nothing_to_plot(tmp_path):
    assert plots.attention("H100", [], 600.0, tmp_path, "a") is None
    assert not list(tmp_path.iterdir())


# ------------------------------------------------ points above a measured roof are ringed (issue 13)


def rings(ax):
    """The red hollow markers drawn around points above their roof: their (x, y) (prefill points are hollow
    too, in their precision's colour)."""
    from matplotlib.colors import to_hex

    return [tuple(xy) for c in ax.collections if len(c.get_facecolor()) == 0 and len(c.get_edgecolor())
            and to_hex(c.get_edgecolor()[0]) == plots.IMPOSSIBLE for xy in c.get_offsets()]


def test_roofline_rings_points_above_the_measured_roof(tmp_path, figures):
    # bf16 roof: min(700 TFLOP/s, I x 3000 GB/s); decode at I = 1 reaches 3 TFLOP/s at most
    over = decode("bf16", 1, rate=3300.0)  # decode 3.3 TFLOP/s at I = 1: 110% of the 3 TFLOP/s roof
    under = decode("bf16", 2, rate=990.0)  # I = 2: 0.99 TFLOP/s of a 6 TFLOP/s roof; prefill 9.9 of 700
    assert plots.roofline("H100", ceilings(), [over, under], tmp_path, "r") == "r"
    assert_written(tmp_path, "r")
    (ax,) = figures[0].axes
    # ringed: over's decode point; its prefill (33 TFLOP/s at I = 128, roof 384) is not
    assert rings(ax) == [(1.0, pytest.approx(3.3))]
    assert any(t.startswith("above its measured roof, impossible") and "llmbench peak" in t for t in legend(ax))
    assert any(t.startswith("30% of the measured roof: overhead-bound below") for t in legend(ax))


def test_roofline_rings_nothing_at_99_percent_of_the_roof(tmp_path, drawn):
    at_99 = decode("bf16", 1, rate=2970.0)  # 2.97 of 3 TFLOP/s
    assert plots.roofline("H100", ceilings(), [at_99], tmp_path, "r") == "r"
    ax = drawn[0].axes[0]
    assert rings(ax) == [] and not any(t.startswith("above its measured roof") for t in legend(ax))


def test_attention_rings_points_above_the_measured_peak(tmp_path, figures):
    records = [attention("triton", seq, t) for seq, t in ((512, 500.0), (1024, 660.0))]  # 660 > 600
    assert plots.attention("H100", records, 600.0, tmp_path, "a") == "a"
    assert_written(tmp_path, "a")
    ax = figures[0].axes[0]
    assert rings(ax) == [(1024.0, 660.0)]
    assert legend(ax) == ["triton", "measured matmul peak"]  # the legend stays as it was
    assert any("above the measured peak" in t.get_text() and "llmbench peak" in t.get_text() for t in ax.texts)


def test_attention_draws_an_implementation_without_a_style_last(tmp_path, drawn):
    records = [attention(impl, seq, 1.0) for impl in ("flex", "triton") for seq in (256, 512)]
    assert plots.attention("cpu", records, None, tmp_path, "a") == "a"
    assert legend(drawn[0].axes[0]) == ["triton", "flex"]


# ------------------------------------------------ issue 16: readable at hundreds of points


def test_scaling_never_joins_engines_or_models(tmp_path, drawn):
    records = [decode("bf16", batch=b, rate=r * b, model=m, engine=e)
               for m in ("tiny-llama", "tiny-qwen") for e, r in (("hf", 10.0), ("lean", 20.0)) for b in (1, 2, 4)]
    assert plots.scaling("H100", records, "batch_size", "batch", tmp_path, "s") == "s"
    ax = drawn[0].axes[0]
    lines = [(line.get_color(), line.get_marker()) for line in ax.lines]
    assert len(lines) == 4 == len(set(lines))  # one line per (model, engine), each its own colour x marker
    for line in ax.lines:
        ys = [y for y in line.get_ydata() if not math.isnan(y)]
        assert len(ys) == 3 and ys == sorted(ys)  # one series: three batch sizes, never a zig-zag
    assert legend(ax) == ["model: tiny-llama", "model: tiny-qwen", "engine: hf", "engine: lean"]


def test_legends_stay_short_at_hundreds_of_points(tmp_path, drawn):
    records = [decode(dtype, batch=b, prompt=p, rate=b * 10.0 + i, model=f"model-{i}", engine=e)
               for i in range(9) for e in ("hf", "hf-static", "lean", "x", "y") for dtype in ("bf16", "fp32")
               for p in (128, 256) for b in (1, 2, 4)]
    assert len(records) == 540
    assert plots.scaling("H100", records, "batch_size", "batch", tmp_path, "s") == "s"
    labels = legend(drawn[0].axes[0])
    assert len(labels) <= 14 and labels[-1].startswith("other")  # 6 colours, 4 markers, 2 styles, other
    assert plots.pareto("H100", records, tmp_path, "p") == "p"
    assert len(legend(drawn[1].axes[0])) <= 15


def test_pareto_one_line_per_series_through_its_batch_sizes_and_the_front(tmp_path, figures):
    records = [decode("bf16", batch=b, rate=r * b ** 0.8, engine=e) for e, r in (("hf", 100.0), ("lean", 150.0))
               for b in (1, 4, 16)]
    assert plots.pareto("H100", records, tmp_path, "pareto-0") == "pareto-0"
    assert_written(tmp_path, "pareto-0")
    ax = figures[0].axes[0]
    series = [line for line in ax.lines if line.get_marker() not in ("None", None, "")]
    assert len(series) == 2
    lean = max(series, key=lambda line: max(y for y in line.get_ydata() if not math.isnan(y)))
    xs = [x for x in lean.get_xdata() if not math.isnan(x)]
    assert xs == pytest.approx([150.0, 150.0 * 4 ** -0.2, 150.0 * 16 ** -0.2])  # tokens/s per sequence, by batch
    front = next(line for line in ax.lines if line.get_linewidth() == 5)
    assert len(front.get_xdata()) == 3  # lean dominates hf everywhere
    assert sorted(t.get_text() for t in ax.texts) == sorted(["b1", "b4", "b16"] * 2)
    assert ax.get_xlabel().startswith("tokens/s per sequence") and ax.get_ylabel().startswith("total tokens/s")


def test_pareto_and_energy_nothing_to_plot(tmp_path):
    assert plots.pareto("H100", [decode("bf16"), decode("fp32")], tmp_path, "p") is None
    assert plots.energy("H100", [decode("bf16", batch=2)], tmp_path, "e") is None  # no telemetry
    assert plots.kernel_resources([], tmp_path, "k") is None
    assert not list(tmp_path.iterdir())


def test_energy_per_token_against_throughput(tmp_path, figures):
    records = [decode("bf16", batch=b, rate=100.0 * b, telemetry={"joules_per_token": 3.0 / b, "power_w_mean": 300})
               for b in (1, 8, 64)]
    assert plots.energy("H100", records, tmp_path, "energy-0") == "energy-0"
    assert_written(tmp_path, "energy-0")
    ax = figures[0].axes[0]
    ys = [y for y in ax.lines[0].get_ydata() if not math.isnan(y)]
    assert ys == pytest.approx([3.0, 3.0 / 8, 3.0 / 64]) and ax.get_yscale() == "log" == ax.get_xscale()


def test_precision_speedup_against_batch_when_there_are_many_points(tmp_path, figures):
    records = [decode(dtype, batch=b, prompt=p, rate=(2.0 if dtype == "bf16" else 1.0) * b * 10)
               for dtype in ("bf16", "fp32") for p in (64, 128, 256, 512) for b in (1, 2, 4, 8)]
    assert plots.precision_comparison("H100", records, tmp_path, "p") == "p"
    ax = figures[0].axes[0]
    assert "Speedup over fp32, 16 points" in ax.get_title()
    drawn = [y for line in ax.lines if line.get_linestyle() != "--" for y in line.get_ydata() if not math.isnan(y)]
    assert set(round(y, 6) for y in drawn) >= {2.0}
    dashed = next(line for line in ax.lines if line.get_linestyle() == "--" and line.get_color() == "black")
    assert list(dashed.get_ydata()) == [2.0] * 4  # fp32 moves twice the bytes: the memory-bound expectation


def compile_record(arch, head_dim, candidate, spill=0, status="ok", fits=True):
    point = {"workload": "kernel-compile", "kernel": "attention.fwd", "arch": arch, "dtype": "bf16",
             "head_dim": head_dim, "case": "causal", "candidate": candidate, "device": None}
    if status != "ok":
        return make_record(run_id="c", point=point, status="failed", error="ptxas error")
    return make_record(run_id="c", point=point, metrics={
        "registers": 200, "spill_stores_bytes": spill, "spill_loads_bytes": spill, "shared_bytes": 65536,
        "programs_per_sm": 1, "warps_per_sm": 8, "occupancy": 0.125, "fits": fits,
        "clean": fits and not spill})


def test_kernel_resources_heat_map(tmp_path, figures):
    from matplotlib.colors import to_hex

    records = [compile_record("sm_90", 128, "w8", spill=0), compile_record("sm_80", 128, "w8", spill=400),
               compile_record("sm_100", 64, "w8", status="failed"), compile_record("sm_90", 64, "w4", fits=False),
               compile_record("sm_90", 64, "w8", spill=8)]
    assert plots.kernel_resources(records, tmp_path, "k") == "k"
    assert_written(tmp_path, "k")
    ax = figures[0].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["sm_80\nhd 128", "sm_90\nhd 64", "sm_90\nhd 128",
                                                            "sm_100\nhd 64"]  # archs in numeric order
    assert [t.get_text() for t in ax.get_yticklabels()] == ["attention.fwd causal  w4", "attention.fwd causal  w8"]
    image = ax.images[0].get_array()
    cell = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert cell[(1, 2)] == "12%" and to_hex(image[1, 2]) == plots.CLEAN  # w8 sm_90 hd128: clean
    assert cell[(1, 3)] == "failed" and cell[(0, 1)] == "no fit"
    assert to_hex(image[1, 0]) != plots.CLEAN and to_hex(image[1, 1]) != plots.CLEAN
    assert image[1, 0][1] < image[1, 1][1]  # 800 bytes spilled is a darker red than 16
    assert tuple(image[0, 0]) == (1.0, 1.0, 1.0, 1.0)  # w4 was not compiled for sm_80: blank


def allreduce_record(world, mib, gbps, nodes=1, status="ok"):
    point = {"workload": "allreduce", "dtype": "fp32", "message_bytes": mib * 2**20, "world_size": world,
             "nodes": nodes, "backend": "nccl"}
    return make_record(run_id="p", point=point, status=status, metrics={"time_ms": 1.0},
                       derived={"achieved_gbps": gbps}, env=GPU)


def test_allreduce_bus_bandwidth_one_line_per_world_size_best_per_size(tmp_path, figures):
    records = [allreduce_record(w, mib, g * w / 8) for w in (2, 8) for mib, g in ((1, 40.0), (16, 200.0),
                                                                                 (256, 360.0))]
    records += [allreduce_record(8, 16, 150.0), allreduce_record(2, 64, 0.0, status="failed")]  # slower repeat
    assert plots.allreduce("H100", records, tmp_path, "ar") == "ar"
    assert_written(tmp_path, "ar")
    ax = figures[-1].axes[0]
    assert legend(ax) == ["2 processes", "8 processes"]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["8 processes"].get_ydata()) == [40.0, 200.0, 360.0]  # the best at 16 MiB, not the repeat
    assert ax.get_xscale() == "log" and [t.get_text() for t in ax.get_xticklabels()] == ["1 MiB", "16 MiB", "256 MiB"]


def test_allreduce_names_nodes_when_they_vary_and_draws_nothing_without_records(tmp_path, drawn):
    records = [allreduce_record(8, 4, 100.0), allreduce_record(8, 4, 40.0, nodes=2)]
    assert plots.allreduce("H100", records, tmp_path, "ar") == "ar"
    assert legend(drawn[-1].axes[0]) == ["8 processes, nodes 1", "8 processes, nodes 2"]
    assert plots.allreduce("H100", [], tmp_path, "none") is None
    assert plots.allreduce("H100", [allreduce_record(2, 4, 0.0, status="failed")], tmp_path, "none") is None


def test_precision_comparison_bars_every_stored_format_against_the_plain_baseline(tmp_path, figures):
    def stored(dtype, rate, weights=None, kv=None, batch=1):
        r = decode(dtype, batch=batch, rate=rate)
        r.update(weight_format=weights or dtype, kv_format=kv or dtype, weight_impl="triton" if weights else None)
        return r

    records = [stored("fp32", 100.0), stored("bf16", 200.0), stored("bf16", 340.0, "int8", "int8"),
               stored("bf16", 210.0, kv="fp8")]
    assert plots.precision_comparison("H100", records, tmp_path, "p") == "p"
    rates = figures[0].axes[0]
    assert legend(rates) == ["fp32", "bf16", "bf16 + fp8 KV", "bf16 + int8 weights + int8 KV"]  # none overwritten
    assert sorted(t.get_text() for t in rates.texts) == ["2.00x", "2.10x", "3.40x"]  # over the fp32 plain run
    colors = [p.get_facecolor() for p in rates.patches]
    assert len(set(colors)) == 4
