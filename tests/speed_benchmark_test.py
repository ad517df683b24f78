"""The speed benchmark's smoke run measures every configuration side by side."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_ecl
from benchmarks import report, speed


@pytest.mark.large
def test_smoke_run_times_every_configuration(tmp_path, capsys):
    output = tmp_path / "speed.json"
    argv = ["--smoke", "--jit", "off", "--output", str(output)]
    results, check_costs, parity = speed.main(argv)
    (timings,) = results.values()
    config = speed.CONFIGS["smoke"]
    assert timings["ECL k=1"]["rows_per_step"] == timings["KD (ours), 2x batch"]["batch_size"]
    assert timings["ECL k=2"]["rows_per_step"] == 3 * config.batch_size
    for name, timing in timings.items():
        assert timing["step_ms"] > 0, name
        assert timing["epochs_timed"] == config.rounds * config.epochs_per_round, name
        assert abs(timing["steps_per_s"] * timing["step_ms"] / 1000 - 1) < 1e-9
    printed = capsys.readouterr().out
    for label, _, _ in speed.RATIOS:
        assert label in printed
    saved = json.loads(output.read_text())
    assert saved["command"] == " ".join(["python -m benchmarks.speed", *argv])
    assert saved["results"]["False"] == timings
    kd, ecl = timings["KD (ours), 2x batch"], timings["ECL k=1"]
    ratio = saved["ratios"]["False"]["ECL k=1 / KD (ours), same rows"]
    assert ratio == ecl["step_ms"] / kd["step_ms"]
    for mode in ["KD", "ECL k=1"]:
        cost = saved["check_cost"]["False"][mode]
        assert cost == check_costs[False][mode]
        assert cost["rounds"] == config.check_rounds
        assert cost["steps"]["rounds"] == config.step_rounds
        for ratios in [cost, cost["steps"]]:  # fit epochs, bare train_step calls
            for label in speed.CHECK_RATIOS:
                q = ratios[label]
                assert 0 < q["q25"] <= q["median"] <= q["q75"]
    for label, ours, theirs in speed.PARITY:
        timed = saved["keras_parity"]["False"][label]
        assert timed == parity[False][label]
        assert timed["batch_size"] == timings[ours]["batch_size"] == timings[theirs]["batch_size"]
        assert timed["fit"]["rounds"] == timed["train_step"]["rounds"] == config.parity_rounds
        assert timed["train_step"]["calls_per_round"] == config.steps_per_round
        for level in ("fit", "train_step"):
            for clock in speed.CLOCKS:
                q = timed[level][clock]
                assert 0 < q["q25"] <= q["median"] <= q["q75"], (label, level, clock)
        assert f"head to head (train_step, cpu), {label}: " in printed
    section = report.speed_section(saved)
    assert section.startswith("## Speed")
    assert f"- ECL k=1 / KD (ours), same rows: **{ratio:.3f}**" in section
    timed = saved["keras_parity"]["False"]["KD (ours) / keras Distiller"]
    cells = " | ".join(
        f"{timed['train_step'][c]['median']:.3f} "
        f"[{timed['train_step'][c]['q25']:.3f}, {timed['train_step'][c]['q75']:.3f}]"
        for c in ("wall", "cpu")
    )
    step_row = f"| False | {config.batch_size} | train_step × {config.steps_per_round} | "
    assert step_row + f"{config.parity_rounds} | {cells} |" in section
    labels = list(speed.CHECK_RATIOS)
    assert "| mode | jit_compile | timed | rounds | " + " | ".join(labels) + " |" in section
    kd = saved["check_cost"]["False"]["KD"]
    for timed, rounds, ratios in [
        ("fit, one epoch", config.check_rounds, kd),
        (f"train_step × {config.steps_per_round}", config.step_rounds, kd["steps"]),
    ]:
        quartiles = [ratios[label] for label in labels]
        cells = " | ".join(f"{q['median']:.3f} [{q['q25']:.3f}, {q['q75']:.3f}]" for q in quartiles)
        assert f"| KD | False | {timed} | {rounds} | {cells} |" in section


def test_the_variants_are_the_same_model_without_some_checks():
    def mlp(units):
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(units)])

    model = keras_ecl.Distiller(mlp(3), mlp(3), mode="kd")
    model.compile(optimizer="adam")
    x, y = np.zeros((8, 4), "float32"), np.zeros(8, "int32")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)

    record = model._label_record
    write = record.write

    def traced(cls):
        """The conditionals `cls`'s step traces, and how often it checks labels."""
        labels = []
        record.write = lambda *args: labels.append(args) or write(*args)
        step = tf.function(lambda a, b: (cls or type(model)).train_step(model, (a, b)))
        try:
            with speed._traced_as(model, cls):
                graph = step.get_concrete_function(tf.constant(x), tf.constant(y)).graph
        finally:
            del record.write
        ifs = [op.type for op in graph.get_operations() if op.type in ("If", "StatelessIf")]
        return len(ifs), len(labels)

    # Checked: labels checked, conditional update; guard only: the conditional
    # update without the label check; unchecked: neither.
    assert traced(None) == (1, 1)
    assert traced(speed.GuardOnlyDistiller) == (1, 0)
    assert traced(speed.UncheckedDistiller) == (0, 0)
    with pytest.raises(RuntimeError):
        with speed._traced_as(model, speed.UncheckedDistiller):
            assert type(model) is speed.UncheckedDistiller
            raise RuntimeError
    assert type(model) is keras_ecl.Distiller
