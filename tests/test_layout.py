"""The layout's rules, read from the imports (ast), so they hold from now on (see DESIGN.md, Layout):

- nothing imports ``harness.cli`` but ``harness/__main__.py``; the subcommand modules
  (``harness/commands/``) are imported only by ``harness/cli.py``, and never import each other;
- ``harness -> workloads -> kernels``, never back; ``kernels/`` imports only torch, triton, the
  standard library and itself, and no private name across files; ``slurm/`` imports nothing of harness;
- only ``harness/runner.py`` times a workload; only ``harness/roofline.py`` turns time and cost into
  rates; records become table rows only in ``harness/views.py`` (and the report and compare, which
  render what views and the comparison give them);
- the sweep never builds a parser: it receives the one it validates against;
- every module has a test file in the mirrored place under ``tests/``.
"""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "kernels", "slurm", "workloads")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every import in the file, at any depth (lazy imports count)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [alias.name for alias in node.names]
            out.append((node.module, names))
            out += [(f"{node.module}.{n}", []) for n in names if f"{node.module}.{n}" in MODULES]
    return out


MODULES = modules()


def importers_of(target: str) -> set[str]:
    return {name for name, path in MODULES.items() if any(m == target for m, _ in imports(path))}


def test_only_main_imports_the_cli():
    assert importers_of("harness.cli") == {"harness.__main__"}


def test_commands_are_imported_by_the_cli_only_and_not_by_each_other():
    commands = {name for name in MODULES if name.startswith("harness.commands.")}
    assert commands, "no subcommand modules found"
    for name, path in MODULES.items():
        used = {m for m, _ in imports(path) if m.startswith("harness.commands")}
        if name == "harness.cli":
            assert used >= commands - {"harness.commands"}
        else:
            assert not used, f"{name} imports {sorted(used)}"


@pytest.mark.parametrize("package, forbidden", [
    ("workloads", ("harness", "slurm")),
    ("kernels", ("harness", "workloads", "slurm", "transformers")),
    ("slurm", ("harness",)),
])
def test_dependencies_point_one_way(package, forbidden):
    for name, path in MODULES.items():
        if name.split(".")[0] != package:
            continue
        bad = [m for m, _ in imports(path) if m.split(".")[0] in forbidden]
        assert not bad, f"{name} imports {bad}"


def test_kernels_import_only_torch_triton_stdlib_and_no_private_names():
    allowed = {"torch", "triton", "kernels", "__future__", *sys.stdlib_module_names}
    for name, path in MODULES.items():
        if not name.startswith("kernels"):
            continue
        for module, names in imports(path):
            assert module.split(".")[0] in allowed, f"{name} imports {module}"
            if module.startswith("kernels"):
                private = [n for n in names if n.startswith("_")]
                assert not private, f"{name} imports private {private} from {module}"


def test_only_the_runner_times_a_workload():
    clocks = {"StepClock", "bench"}
    for name, path in MODULES.items():
        for module, names in imports(path):
            if module == "harness.timing" and clocks & set(names):
                assert name == "harness.runner", f"{name} imports {clocks & set(names)} from harness.timing"
        # kernels.resources times how long a compile takes (reported beside registers and spills), not a workload
        if name not in ("harness.timing", "harness.runner", "harness.telemetry", "harness.sweep_tasks",
                        "harness.commands.sweep", "kernels.resources"):
            source = path.read_text()
            assert "perf_counter" not in source and "cuda.Event" not in source, f"{name} reads a clock"


def _rate_keys(path: Path) -> list[str]:
    """Keys ``achieved_gbps`` / ``achieved_tflops`` written (dict literal or subscript store)."""
    keys = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Dict):
            keys += [k.value for k in node.keys if isinstance(k, ast.Constant)]
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store) and \
                isinstance(node.slice, ast.Constant):
            keys.append(node.slice.value)
    return [k for k in keys if k in ("achieved_gbps", "achieved_tflops")]


def test_only_roofline_turns_time_and_cost_into_rates():
    for name, path in MODULES.items():
        if name != "harness.roofline":
            assert not _rate_keys(path), f"{name} computes {_rate_keys(path)} itself"


def test_only_views_the_report_and_compare_render_tables():
    allowed = {"harness.views", "harness.report", "harness.compare", "harness.commands.models"}
    numbers = {"si", "sig3"}  # number formats, which the plots' tick labels share with the tables
    for name in importers_of("harness.tables") - allowed:
        used = {n for m, names in imports(MODULES[name]) if m == "harness.tables" for n in names}
        assert used <= numbers, f"{name} uses harness.tables' {sorted(used - numbers)}"


def test_the_sweep_never_builds_a_parser():
    for name in ("harness.sweep", "harness.sweep_tasks"):
        source = MODULES[name].read_text()
        assert "ArgumentParser(" not in source and "build_parser" not in source


NO_TEST_FILE = {"workloads/errors.py"}  # one exception class, raised and checked by every command's tests


def test_tests_mirror_the_modules():
    missing = []
    for name, path in MODULES.items():
        if path.name in ("__init__.py", "__main__.py") or str(path.relative_to(ROOT)) in NO_TEST_FILE:
            continue
        rel = path.relative_to(ROOT)
        test = ROOT / "tests" / rel.parent / f"test_{rel.name}"
        if not test.exists():
            missing.append(str(test.relative_to(ROOT)))
    assert not missing, f"modules without a test file: {missing}"
