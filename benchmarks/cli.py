"""The benchmarks' command line: their shared flags and the command that reproduces a run.

Benchmarks run as modules from the repository root (`python -m benchmarks.<name>`), so the
package and `examples` import without `sys.path` edits. Each result file records that command,
with the flags it was given.
"""

import argparse
import dataclasses
import datetime
import json
import os
import shlex
import sys

import tensorflow as tf

from benchmarks import harness

RESULTS_DIR = os.path.join("benchmarks", "results")


def parse_args(doc, configs, argv=None, add_arguments=None):
    """The flags every benchmark takes: `--seeds`, `--smoke`, `--output`, `--add-seeds`, `--clock`.

    `add_arguments(parser)`, if given, adds a benchmark's own flags. Returns
    the parsed arguments and the "smoke" or "full" entry of `configs`.
    """
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    if add_arguments is not None:
        add_arguments(parser)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, runs in seconds")
    parser.add_argument("--output", default=RESULTS_DIR, help="folder of the JSON results")
    parser.add_argument(
        "--add-seeds",
        action="store_true",
        help="add these seeds to the existing result file (same config), keeping its others",
    )
    parser.add_argument(
        "--clock",
        choices=sorted(harness.CLOCKS),
        default="wall",
        help="what budgets and timings read: wall-clock seconds (default) or this process's "
        "CPU seconds, with one TensorFlow thread, for runs on a machine shared with other jobs",
    )
    args = parser.parse_args(argv)
    harness.use_clock(args.clock)
    if args.clock == "cpu":
        one_thread()
    return args, configs["smoke" if args.smoke else "full"]


def one_thread():
    """Runs TensorFlow on one thread, so a run's CPU seconds are the seconds it would take
    alone (`--clock cpu`). Raises if TensorFlow already started with more."""
    threading = tf.config.threading
    try:
        threading.set_intra_op_parallelism_threads(1)
        threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already runs: fine only if on one thread
        if threading.get_intra_op_parallelism_threads() != 1:
            raise RuntimeError(
                "--clock cpu needs TensorFlow on one thread, and it already started with "
                f"{threading.get_intra_op_parallelism_threads() or 'all'} intra-op threads. "
                "Set TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 in the environment."
            ) from None


def command_line(module, argv=None):
    """`python -m benchmarks.<module> <flags>`, the command that reproduces a run."""
    args = sys.argv[1:] if argv is None else list(argv)
    return shlex.join(["python", "-m", f"benchmarks.{module}", *args])


def earlier_result(args, name, config):
    """With `--add-seeds`, the result file `<output>/<name>.json` the new seeds join.

    Checked before anything trains: the file must exist and have been run with
    the same config, or the seeds would not be comparable. None without the flag.
    """
    if not args.add_seeds:
        return None
    path = os.path.join(args.output, f"{name}.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"--add-seeds needs an earlier result file. Not found: {path}")
    with open(path) as file:
        earlier = json.load(file)
    expected = json.loads(json.dumps(dataclasses.asdict(config)))  # tuples as JSON lists
    if earlier.get("config") != expected:
        raise ValueError(
            f"--add-seeds: {path} was run with another config. "
            f"Expected: {expected}. Received: {earlier.get('config')}"
        )
    if earlier.get("clock", "wall") != args.clock:
        raise ValueError(
            f"--add-seeds: {path} was timed on another clock, so their budgets differ. "
            f"Expected: --clock {earlier.get('clock', 'wall')}. Received: --clock {args.clock}"
        )
    return earlier


def with_earlier_seeds(earlier, per_seed, command):
    """`per_seed` joined with the seeds of `earlier` it does not rerun.

    Returns the per-seed results sorted by seed, and the result's `command`
    and `date` fields: both runs' commands (joined by `&&`) and dates, so the
    file still says how every seed was produced.
    """
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    seeds = [entry["seed"] for entry in per_seed]
    if earlier is None:
        return per_seed, command, now
    kept = [entry for entry in earlier["per_seed"] if entry["seed"] not in seeds]
    merged = sorted([*kept, *per_seed], key=lambda entry: entry["seed"])
    kept_seeds = " ".join(str(entry["seed"]) for entry in kept)
    before = earlier["date"]
    if "(seeds" not in before:  # the earlier file had one run
        before += f" (seeds {kept_seeds})"
    date = f"{before}; {now} (seeds {' '.join(map(str, seeds))})"
    return merged, f"{earlier['command']} && {command}", date


def run_seeds(args, name, config, run, command):
    """Runs `run(args.seeds)`, the per-seed results of result file `name`.

    With `--add-seeds`, the earlier file is checked before anything trains and
    its other seeds are joined in. Returns the per-seed results and the
    result's `command`, `date` and `seeds` fields.
    """
    earlier = earlier_result(args, name, config)
    per_seed, command, date = with_earlier_seeds(earlier, run(args.seeds), command)
    seeds = [entry["seed"] for entry in per_seed]
    return per_seed, {"command": command, "date": date, "seeds": seeds, "clock": args.clock}
