"""Metrics and statistics of the benchmarks, in plain NumPy from the models' raw outputs.

Every model (ours, Keras' `Distiller`, a plain `fit`) is scored by these same functions, so
no framework metric can differ between them. Nothing here imports Keras or TensorFlow, so the
report is rebuilt from the JSON results without loading either.
"""

import numpy as np

ECE_BINS = 15


def mean_std(values):
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    values = np.asarray(values, dtype=np.float64)
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return float(values.mean()), std


def format_mean_std(values, digits=3):
    """`"0.842 ± 0.010"` for a list of per-seed values."""
    mean, std = mean_std(values)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def gap_closed(value, kd_value, teacher_value, higher_is_better=True):
    """Share of the teacher–KD gap that `value` closes, or None if the teacher is not better.

    For accuracy `(value - kd) / (teacher - kd)`; for an error (RMSE, NLL) the
    same ratio with the signs flipped, `(kd - value) / (kd - teacher)`.
    """
    sign = 1.0 if higher_is_better else -1.0
    gap = sign * (teacher_value - kd_value)
    if gap <= 0:
        return None
    return sign * (value - kd_value) / gap


def log_softmax(logits):
    """Log-probabilities from logits, shifted by the row maximum for stability."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def expected_calibration_error(probs, labels, num_bins=ECE_BINS):
    """ECE over `num_bins` equal-width confidence bins `(i/B, (i+1)/B]`.

    `sum_b n_b / n * |accuracy_b - mean confidence_b|`, with the confidence
    the top-class probability (Guo et al., 2017).
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    confidence = probs.max(axis=-1)
    correct = probs.argmax(axis=-1) == labels
    bins = np.clip(np.ceil(confidence * num_bins).astype(int) - 1, 0, num_bins - 1)
    ece = 0.0
    for b in np.unique(bins):
        members = bins == b
        ece += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(ece)


def classification_metrics(logits, labels):
    """Accuracy, NLL (mean cross-entropy at temperature 1) and ECE from logits."""
    labels = np.asarray(labels).astype(int)
    log_probs = log_softmax(logits)
    return {
        "accuracy": float((log_probs.argmax(axis=-1) == labels).mean()),
        "nll": float(-log_probs[np.arange(len(labels)), labels].mean()),
        "ece": expected_calibration_error(np.exp(log_probs), labels),
    }


def gaussian_nll(y, loc, scale):
    """Mean negative log-density of `y` under `Normal(loc, scale)`."""
    y, loc, scale = (np.asarray(a, dtype=np.float64) for a in (y, loc, scale))
    return float(np.mean(0.5 * np.log(2 * np.pi * scale**2) + 0.5 * ((y - loc) / scale) ** 2))


def rmse(a, b):
    """Root mean squared difference of two arrays."""
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))


def summarize(per_seed):
    """`{model: {metric: {"mean", "std", "values"}}}` over the per-seed results."""
    models = per_seed[0]["models"]
    summary = {}
    for model, metrics in models.items():
        summary[model] = {}
        for metric in metrics:
            values = [run["models"][model][metric] for run in per_seed]
            mean, std = mean_std(values)
            summary[model][metric] = {"mean": mean, "std": std, "values": values}
    return summary


def gaps(summary, metric, higher_is_better, models):
    """Gap closed vs KD for `models` on `metric`, from the means over seeds."""
    teacher, kd = summary["teacher"][metric]["mean"], summary["KD"][metric]["mean"]
    values = {
        model: gap_closed(summary[model][metric]["mean"], kd, teacher, higher_is_better)
        for model in models
        if model in summary
    }
    return {"metric": metric, "values": values}


# Budgets: the metric a method reaches within a multiple of KD's training time.

# A budget includes a scoring up to this fraction past it: training stops at the
# first epoch end at or past the largest budget, a fraction of an epoch over.
BUDGET_SLACK = 0.02
# A curve that ends this fraction or more short of a budget did not train for it:
# KD trains a fixed epoch count, a few percent either side of its largest budget.
TRAINED_SHORT = 0.05


def at_budget(points, budget_seconds, metric, fixed_epochs=False):
    """The metric at the last scoring of a curve within `budget_seconds`, or None.

    None too if the curve ends well short of the budget: a method capped at
    1x has no figure at 2x. Not so with `fixed_epochs` (KD, which trains
    `max(budgets)` times its reference epochs and ends short of that many
    units only by the tracing its unit includes).

    `points` are `{"seconds": ..., metric: ...}` dicts in training order. This
    is the student one would ship after that much training (no choice of the
    best point on the test split).
    """
    short = points and points[-1]["seconds"] < budget_seconds * (1 - TRAINED_SHORT)
    if short and not fixed_epochs:
        return None  # trained for less (a capped reference): it says nothing of this budget
    within = [p for p in points if p["seconds"] <= budget_seconds * (1 + BUDGET_SLACK)]
    return within[-1][metric] if within else None


def budget_summary(per_seed, metric, budgets):
    """`{model: {budget: {"mean", "std", "values"}}}` of `metric` at each budget.

    A budget `b` is `b` times the seed's `budget_unit_seconds` (KD's time for
    its reference epochs); a teacher's (a model without a curve) is its own
    at every budget.
    """
    summary = {}
    for model in per_seed[0]["models"]:
        summary[model] = {}
        for budget in budgets:
            values = []
            for run in per_seed:
                if model not in run["curves"]:  # a teacher: its own value at every budget
                    values.append(run["models"][model][metric])
                else:
                    seconds = budget * run["budget_unit_seconds"]
                    values.append(at_budget(run["curves"][model], seconds, metric, model == "KD"))
            if None not in values:
                mean, std = mean_std(values)
                summary[model][str(budget)] = {"mean": mean, "std": std, "values": values}
    return summary


def time_to_reach_kd(per_seed, model, metric, higher_is_better):
    """Per seed, the first scoring at which `model` is as good as KD's final student.

    Returns `[seconds to get there / KD's seconds to its end, ...]`, None for a
    seed where `model` never gets there: how much of KD's training time the
    method needs for KD's result ("reaches KD's final accuracy in 0.5x its time").
    """
    ratios = []
    for run in per_seed:
        kd_end = run["curves"]["KD"][-1]
        target = kd_end[metric]
        reached = [
            p["seconds"]
            for p in run["curves"][model]
            if (p[metric] >= target if higher_is_better else p[metric] <= target)
        ]
        ratios.append(reached[0] / kd_end["seconds"] if reached else None)
    return ratios


def mean_curve(per_seed, model, metric, grid):
    """Mean over seeds of `metric` against training time in budget units, on `grid`.

    Each seed's curve is read as a step function (the last scoring at or
    before each point); points before a seed's first scoring or after its
    last (a method that trained for less) are NaN.
    """
    values = []
    for run in per_seed:
        unit = run["budget_unit_seconds"]
        points = run["curves"][model]
        times = np.array([p["seconds"] / unit for p in points])
        ys = np.array([p[metric] for p in points], dtype=np.float64)
        index = np.searchsorted(times, grid, side="right") - 1
        trained = (index >= 0) & (grid <= times[-1] * (1 + BUDGET_SLACK))
        values.append(np.where(trained, ys[np.maximum(index, 0)], np.nan))
    values = np.array(values)
    counts = np.sum(~np.isnan(values), axis=0)
    return np.where(counts > 0, np.nansum(values, axis=0) / np.maximum(counts, 1), np.nan)
