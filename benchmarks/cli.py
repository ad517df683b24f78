"""The benchmarks' command line: their shared flags and the command that reproduces a run.

Benchmarks run as modules from the repository root (`python -m benchmarks.<name>`), so the
package and `examples` import without `sys.path` edits. Each result file records that command,
with the flags it was given.
"""

import argparse
import os
import shlex
import sys

RESULTS_DIR = os.path.join("benchmarks", "results")


def parse_args(doc, configs, argv=None, add_arguments=None):
    """The flags every benchmark takes: `--seeds`, `--smoke`, `--output`.

    `add_arguments(parser)`, if given, adds a benchmark's own flags. Returns
    the parsed arguments and the "smoke" or "full" entry of `configs`.
    """
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    if add_arguments is not None:
        add_arguments(parser)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, runs in seconds")
    parser.add_argument("--output", default=RESULTS_DIR, help="folder of the JSON results")
    args = parser.parse_args(argv)
    return args, configs["smoke" if args.smoke else "full"]


def command_line(module, argv=None):
    """`python -m benchmarks.<module> <flags>`, the command that reproduces a run."""
    args = sys.argv[1:] if argv is None else list(argv)
    return shlex.join(["python", "-m", f"benchmarks.{module}", *args])
