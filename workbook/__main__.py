"""Command line: ``python -m workbook --help``.

    python -m workbook list
    python -m workbook run roofline --preset small --record
    python -m workbook prepare        # build the tokenizer and base model before a first run
"""

from __future__ import annotations

import argparse
import json
import sys

from workbook.config import PRESETS, WorkbookError


def experiment_names() -> list[str]:
    """The experiments' names, read from the modules' source without importing them (torch,
    pandas): ``--help`` answers in well under two seconds. ``registry.experiments()`` imports
    the modules and is the authority; a test checks that both agree."""
    import ast
    from pathlib import Path

    names = []
    for path in sorted(Path(__file__).parent.rglob("*.py")):   # topic packages too
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "EXPERIMENTS" for t in node.targets):
                names += [kw.value.value for call in ast.walk(node.value)
                          if isinstance(call, ast.Call) for kw in call.keywords
                          if kw.arg == "name" and isinstance(kw.value, ast.Constant)]
    return sorted(names)


def _parser(names: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m workbook",
        description="Run the LLM Training workbook's experiments headless.",
        epilog="experiments: " + ", ".join(names),
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the experiments, their notebook and GPU needs")
    prepare = sub.add_parser("prepare", help="build the tokenizer and the base model the "
                             "notebooks load (once; `make lab` runs this)")
    prepare.add_argument("--preset", choices=PRESETS, default=None,
                         help="which base model; default as for run")
    prepare.add_argument("--seed", type=int, default=0)
    run = sub.add_parser("run", help="run one experiment and print its table")
    run.add_argument("experiment", help="one of: " + ", ".join(names))
    run.add_argument("--preset", choices=PRESETS, default=None,
                     help="small (CPU, seconds) or full (one GPU, minutes); "
                          "default: $WORKBOOK_PRESET, else full with CUDA, small without")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override one config field (VALUE parsed as JSON, else a string)")
    run.add_argument("--record", action="store_true",
                     help="append the rows to data/results/<experiment>.csv")
    run.add_argument("--in-process", action="store_true",
                     help="run in this process instead of a fresh child process")
    return parser


def _overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise WorkbookError(f"--set {pair!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parser(experiment_names()).parse_args(argv)
    from workbook import registry, results

    try:
        if args.command == "list":
            for exp in registry.experiments().values():
                gpus = ", ".join(f"{p}: {n} GPU" for p, n in exp.min_gpus.items())
                print(f"{exp.name:24s} {exp.notebook:28s} ({gpus})  {exp.summary}")
            return 0
        if args.command == "prepare":
            from workbook.model import prepare

            prepare(args.preset, args.seed)
            return 0
        overrides = _overrides(args.set)
        if args.in_process:
            rows = registry.execute(args.experiment, args.preset, args.seed, overrides)
            if args.record:
                results.record(args.experiment, rows, preset=registry.resolve_preset(
                    args.preset), seed=args.seed, overrides=overrides)
        else:
            rows = registry.run_isolated(args.experiment, args.preset, args.seed, overrides,
                                         record=args.record, echo=True)
    except WorkbookError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import pandas as pd

    with pd.option_context("display.max_rows", 500, "display.width", 200):
        print(rows.to_string(index=False))
    failed = rows[rows["status"] != "ok"] if "status" in rows else rows.iloc[0:0]
    if args.record:
        print(f"recorded into {results.ledger_path(args.experiment)}")
    return 1 if len(failed) == len(rows) else 0


if __name__ == "__main__":
    sys.exit(main())
