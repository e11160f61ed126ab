"""Report figures (harness/plots.py): each writes PNG and SVG from small records and returns None with nothing to plot."""

import pytest

from harness import plots
from harness.ceilings import Ceilings, spec_for
from harness.records import make_record

GPU = {"device_name": "NVIDIA H100 80GB HBM3", "device_type": "cuda", "host": "gpu-node"}


def decode(dtype, batch=1, prompt=128, rate=100.0, model="tiny-llama"):
    elem = 4 if dtype == "fp32" else 2
    point = {"workload": "decode", "model": model, "dtype": dtype, "batch_size": batch, "prompt_len": prompt,
             "new_tokens": 16}
    derived = {"arithmetic_intensity": batch / elem * 2, "achieved_tflops": rate * 1e-3,
               "prefill_arithmetic_intensity": batch * prompt / elem * 2, "prefill_tflops": rate * 1e-2}
    return make_record(run_id="d", point=point, metrics={"tokens_per_s": rate},
                       cost={"bytes_per_step": 1e8 * elem}, derived=derived, env=GPU)


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
    png, svg = out / f"{stem}.png", out / f"{stem}.svg"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    assert svg.stat().st_size > 1000 and "<svg" in svg.read_text()


def legend(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def ceilings():
    return Ceilings("NVIDIA H100 80GB HBM3", copy_gbps=3000.0, matmul_tflops={"bf16": 700.0, "fp32": 50.0},
                    spec=spec_for("NVIDIA H100 80GB HBM3"))


def test_roofline_writes_png_and_svg(tmp_path, figures):
    out = tmp_path / "plots" / "nested"  # created on demand
    records = [decode("bf16", 1), decode("fp32", 4, rate=50.0)]
    assert plots.roofline("H100", ceilings(), records, out, "roofline-0") == "roofline-0"
    assert_written(out, "roofline-0")
    (ax,) = figures[0].axes
    labels = legend(ax)
    assert any(t.startswith("measured fp32: 3000 GB/s, 50 TFLOP/s") for t in labels)
    assert any(t.startswith("spec bf16: 3350 GB/s") for t in labels)
    assert "decode bf16 tiny-llama b1 p128 n16" in labels and "prefill fp32 tiny-llama b4 p128 n16" in labels
    assert not any(t.startswith("spec fp16") for t in labels)  # only precisions that were measured
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
    assert [t.get_text() for t in rates.get_xticklabels()] == ["tiny-llama b1 p128 n16"]
    assert legend(rates) == ["fp32", "bf16", "fp16"]  # report order, not record order
    assert sorted(round(p.get_height()) for p in sizes.patches) == [200, 200, 400]  # MB per step


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
    xs = {tuple(line.get_xdata()) for line in ax.lines}
    assert xs == {(1, 2, 4), (1, 8)}  # sorted along the axis
    assert all(other.replace("_", " ") in t for t in legend(ax))


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
    """The hollow markers drawn around points above their roof: their (x, y)."""
    return [tuple(xy) for c in ax.collections if len(c.get_facecolor()) == 0 for xy in c.get_offsets()]


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
