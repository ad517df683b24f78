"""The speed benchmark's smoke run measures every configuration side by side."""

import importlib
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# As a package module: benchmarks/ on sys.path would shadow the `mnist1d` package
# with benchmarks/mnist1d.py for every test collected after this one.
speed = importlib.import_module("benchmarks.speed")


def test_smoke_run_times_every_configuration(tmp_path, capsys):
    output = tmp_path / "speed.json"
    results = speed.main(["--smoke", "--jit", "off", "--output", str(output)])
    (timings,) = results.values()
    batch = speed.CONFIGS["smoke"]["batch_size"]
    assert timings["ECL k=1"]["rows_per_step"] == timings["KD (ours), 2x batch"]["batch_size"]
    assert timings["ECL k=2"]["rows_per_step"] == 3 * batch
    for name, timing in timings.items():
        assert timing["step_ms"] > 0, name
        assert timing["epochs_timed"] == 2, name
        assert abs(timing["steps_per_s"] * timing["step_ms"] / 1000 - 1) < 1e-9
    printed = capsys.readouterr().out
    for label, _, _ in speed.RATIOS:
        assert label in printed
    saved = json.loads(output.read_text())
    assert saved["results"]["False"] == timings
    kd, ecl = timings["KD (ours), 2x batch"], timings["ECL k=1"]
    ratio = saved["ratios"]["False"]["ECL k=1 / KD (ours), same rows"]
    assert ratio == ecl["step_ms"] / kd["step_ms"]
    section = speed.markdown_section(saved)
    assert section.startswith("## Speed")
    assert f"- ECL k=1 / KD (ours), same rows: **{ratio:.3f}**" in section
