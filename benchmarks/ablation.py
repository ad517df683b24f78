"""What moves ECL per second, on validation splits only: one change at a time from the default.

Each variant changes one setting of `keras_ecl.Distiller`'s default recipe (or is a peer,
for reference) and trains, after KD sets the time unit, for 1 unit of wall-clock on
MNIST-1D (800 training signals held out), digits (its validation split), Friedman #1
(its validation split) and Fashion-MNIST's 10 % regime with each student (the 5000
held-out training images). The test splits are never read here; the default recipe was
chosen from these tables.

Run `python -m benchmarks.ablation --seeds 0` from the repository root (about 50 minutes on
a 2-core CPU), `--only mnist1d` for one benchmark (added to an earlier
result file's others), or with `--smoke` for a run of seconds.
"""

if not __package__:
    raise SystemExit("Run it from the repository root: python -m benchmarks.ablation")

import argparse
import dataclasses
import json
import os
import tempfile

import keras_ecl
from benchmarks import cli, digits, fashion_mnist, friedman1, harness, mnist1d, report

NAME = "ablation"
BUDGETS = (1.0,)  # one unit: a ranking of variants, at the cost of a KD run each
S = keras_ecl.samplers


def variants(regression, warmup_steps):
    """`{label: change(options, seed, x) -> options}`: one change from the default recipe.

    `x` are the training inputs (for samplers fitted to them); `warmup_steps`
    the steps of a quarter of the largest budget's KD epochs.
    """

    def with_(**changes):
        return lambda options, seed, x: {**options, **changes}

    def sampler(make):
        return lambda options, seed, x: {**options, "sampler": make(seed, x)}

    def head(temperature):
        if regression:
            return None
        return with_(head=keras_ecl.heads.Categorical(temperature))

    table = {
        "default recipe": with_(),
        "k = 2": with_(samples_per_example=2),
        "k = 4": with_(samples_per_example=4),
        "real inputs in the KL (real_weight 1)": with_(real_weight=1.0),
        "no labels (supervised_weight 0)": with_(supervised_weight=0.0),
        "supervised_weight 0.1": with_(supervised_weight=0.1),
        "no selection (every draw kept)": with_(selection=None),
        "the default before 2026-12-07 (supervised_weight 0.1, no selection)": with_(
            supervised_weight=0.1, selection=None
        ),
        "temperature 4": head(4.0),
        "uncertainty_weighting entropy": with_(uncertainty_weighting="entropy"),
        "selection: student uncertainty, 8 candidates": with_(
            selection=keras_ecl.selection.Selection(8, "student_uncertainty")
        ),
        "selection: teacher uncertainty, 4 candidates": with_(
            selection=keras_ecl.selection.Selection(4, "teacher_uncertainty")
        ),
        "selection: disagreement, 4 candidates": with_(
            selection=keras_ecl.selection.Selection(4, "disagreement")
        ),
        "updates_per_batch 1": with_(updates_per_batch=1),
        "updates_per_batch 2": with_(updates_per_batch=2),
        "updates_per_batch 8": with_(updates_per_batch=8),
        "sampler MixUp(1.0)": sampler(lambda seed, x: S.MixUp(1.0, seed=seed)),
        "sampler OneOf[MixUp, CutMix, GaussianNoise(0.5)]": sampler(
            lambda seed, x: S.OneOf([S.MixUp(1.0), S.CutMix(1.0), S.GaussianNoise(0.5)], seed=seed)
        ),
        "sampler GaussianMixture around the batch": sampler(
            lambda seed, x: S.GaussianMixture(16, dims=_dims(x), seed=seed).adapt(x)
        ),
        "sampler GaussianMixture, whole fit": sampler(
            lambda seed, x: S.GaussianMixture(
                16, dims=_dims(x), around_batch=False, seed=seed
            ).adapt(x)
        ),
        "schedule: teacher term warmed up over the first quarter": with_(warmup_steps=warmup_steps),
    }
    return {label: change for label, change in table.items() if change is not None}


def _dims(x):
    """Principal directions for the fitted densities: 16, or all features if fewer."""
    return min(16, int(x[0].size))


def ablation_task(base, config, regression, only=None):
    """`base` (a validation-scored Task) with KD, the peers, then one method per variant.

    `only`, if given, keeps the variants with those labels (and the default recipe).
    """
    x = base.data[0]
    steps_per_epoch = -(-len(x) // config.batch_size)
    warmup_epochs = config.student_epochs * max(BUDGETS) / 4
    table = variants(regression, int(warmup_epochs * steps_per_epoch))
    if only is not None:
        unknown = sorted(set(only) - set(table))
        if unknown:
            raise ValueError(f"Unknown variants {unknown}. Expected some of {sorted(table)}")
        table = {
            label: change for label, change in table.items() if label in {*only, "default recipe"}
        }

    def runs(seed):
        head = keras_ecl.heads.Normal() if regression else None
        base_runs = base.runs(seed)
        recipe = harness.ecl_options(seed=1000 + seed, head=head)
        out = {"KD": base_runs["KD"]}
        if not regression:  # the peer with the recipe's 4 updates per batch, and as published
            out["FunMatch"] = base_runs["FunMatch"]
            out["FunMatch, 1 update per batch (as published)"] = {
                **base_runs["FunMatch"],
                "updates_per_batch": 1,
            }
        for label, change in table.items():
            out[label] = change(recipe, 1000 + seed, x)
        return out

    peers = [] if regression else ["FunMatch", "FunMatch, 1 update per batch (as published)"]
    labels = ["KD", *peers, *table]
    methods = tuple(harness.Method(label, harness.distilled(label)) for label in labels)
    return dataclasses.replace(base, runs=runs, methods=methods)


def tasks(smoke, only=None, names=None):
    """`{name: (task, config, (metric, label, higher is better))}` of the three ablations."""
    smoke_cache = os.path.join(tempfile.gettempdir(), "keras_ecl_smoke_teachers")
    validation_tasks = {  # name: (task of a config, the configs, regression)
        "mnist1d": (
            lambda c: mnist1d.task(c, mnist1d.runs_for_seed, validation=True),
            mnist1d.CONFIGS,
            False,
        ),
        "digits": (
            lambda c: digits.task(c, digits.runs_for_seed, validation=True),
            digits.CONFIGS,
            False,
        ),
        "friedman1": (lambda c: friedman1.task(c, validation=True), friedman1.CONFIGS, True),
        **{
            f"fashion_mnist_{student}": (
                lambda c, student=student: fashion_mnist.task(
                    c,
                    fashion_mnist.runs_for_seed,
                    "10pct",
                    student,
                    validation=True,
                    # A smoke run's teacher must not replace the cached real one.
                    cache=smoke_cache if smoke else fashion_mnist.TEACHER_CACHE,
                ),
                {"full": fashion_mnist.CONFIGS["10pct"], "smoke": fashion_mnist.SMOKE},
                False,
            )
            for student in fashion_mnist.STUDENTS
        },
    }
    out = {}
    for name, (make_task, configs, regression) in validation_tasks.items():
        if names is not None and name not in names:
            continue
        config = dataclasses.replace(configs["smoke" if smoke else "full"], budgets=BUDGETS)
        metric = (
            ("nll", "validation NLL", False)
            if regression
            else ("accuracy", "validation accuracy", True)
        )
        task = ablation_task(make_task(config), config, regression, only)
        out[name] = (task, config, metric)
    return out


def earlier_results(output):
    """The benchmarks of an earlier ablation file in `output`, which `--only` runs add to."""
    path = os.path.join(output, f"{NAME}.json")
    if not os.path.exists(path):
        return {}
    with open(path) as file:
        return json.load(file)["results"]


def main(argv=None):
    def add_arguments(parser: argparse.ArgumentParser):
        parser.add_argument(
            "--only",
            nargs="+",
            choices=["mnist1d", "digits", "friedman1", "fashion_mnist_cnn", "fashion_mnist_mlp"],
        )
        parser.add_argument("--variants", nargs="+", help="labels of the variants to run (all)")

    args, _ = cli.parse_args(__doc__, {"smoke": None, "full": None}, argv, add_arguments)
    results = earlier_results(args.output) if args.only else {}
    for name, (task, config, (metric, label, higher)) in tasks(
        args.smoke, args.variants, args.only
    ).items():
        per_seed = harness.run(task, args.seeds)
        results[name] = {
            "config": dataclasses.asdict(config),
            "budget": harness.budget_result(per_seed, config, metric, label, higher),
            "per_seed": per_seed,
            "command": cli.command_line(NAME, argv),
        }
    result = {
        "title": "Choosing ECL's recipe: one change at a time, on validation splits",
        "description": __doc__.split("\n\n")[1].replace("\n", " "),
        "command": cli.command_line(NAME, argv),
        "seeds": args.seeds,
        "results": results,
    }
    return report.finish_ablation(NAME, result, args.output)


if __name__ == "__main__":
    main()
