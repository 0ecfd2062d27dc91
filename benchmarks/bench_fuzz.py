"""Long fuzzing profile: the property tests of tests/test_fuzz.py with many examples per target.

    .venv/bin/python benchmarks/bench_fuzz.py [--examples 2000] [--only coco,h36m] [--out PATH]

Every annotation reader (COCO, MPII JSON/HDF5, StanfordExtra, CelebA/MAFL, MTFL, pose JSON,
Human3.6M npz + cameras), the config layer (build_dataclass, _coerce, parse_overrides,
config_from_dict) and the codecs (heatmap, regression, PAF, landmarks, MDN) are run with
`--examples` hypothesis examples each (the default test run uses 25). Prints, per target, the
inputs tried, how many a reader accepted or refused (with a one-line error naming the file), the
time and any failure; then the totals per category. Writes the report (markdown) only with
`--out PATH`, e.g. `--out benchmarks/results/fuzz.md`. Exit status 1 when a property failed.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--examples", type=int, default=2000, help="hypothesis examples per target")
    ap.add_argument("--only", default="", help="comma-separated substrings of target names to run")
    ap.add_argument("--out", help="write the markdown report here")
    args = ap.parse_args(argv)
    if args.examples < 1:
        raise SystemExit("--examples must be >= 1")
    os.environ["POSEKIT_FUZZ_EXAMPLES"] = str(args.examples)  # read when the module is imported
    sys.path.insert(0, str(ROOT / "tests"))
    import test_fuzz as fz  # noqa: E402  (after the environment is set)

    targets = [(name, fn) for name, fn in vars(fz).items()
               if name.startswith("test_fuzz_") and name != "test_fuzz_counts_reported" and callable(fn)]
    if args.only:
        keys = [k.strip() for k in args.only.split(",") if k.strip()]
        targets = [(n, f) for n, f in targets if any(k in n for k in keys)]
    rows, failures = [], []
    start_all = time.perf_counter()
    for name, fn in targets:
        before = dict(fz.COUNTS)
        t0 = time.perf_counter()
        status = "ok"
        try:
            fn()
        except Exception as e:  # a falsified property: report it, keep going
            status = f"FAILED: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
            failures.append((name, traceback.format_exc()))
        dt = time.perf_counter() - t0
        delta = {k: fz.COUNTS[k] - before.get(k, 0) for k in fz.COUNTS}
        category = next((k for k in ("readers", "config", "codecs") if delta.get(k)), "-")
        rows.append((name.removeprefix("test_fuzz_"), category, delta.get(category, 0),
                     delta.get("readers_accepted", 0), delta.get("readers_refused", 0), dt, status))
        print(f"{rows[-1][0]:28s} {category:8s} {rows[-1][2]:7d} inputs  {dt:7.1f} s  {status}", flush=True)
    total = time.perf_counter() - start_all

    lines = ["# Fuzzing report (long profile)", "",
             f"`benchmarks/bench_fuzz.py --examples {args.examples}` on {platform.machine()}, "
             f"Python {platform.python_version()}, {total:.0f} s in all.", "",
             "| target | category | inputs | accepted | refused (one line, file named) | time s | result |",
             "|---|---|---:|---:|---:|---:|---|"]
    for name, cat, n, acc, ref, dt, status in rows:
        acc_s, ref_s = (str(acc), str(ref)) if cat == "readers" else ("", "")
        lines.append(f"| {name} | {cat} | {n} | {acc_s} | {ref_s} | {dt:.1f} | {status} |")
    lines += ["", "Inputs tried per category: " + ", ".join(
        f"{k} {fz.COUNTS.get(k, 0)}" for k in ("readers", "config", "codecs"))
        + f" (readers accepted {fz.COUNTS.get('readers_accepted', 0)}, refused {fz.COUNTS.get('readers_refused', 0)})."]
    if failures:
        lines += ["", "## Failures", ""]
        for name, tb in failures:
            lines += [f"### {name}", "", "```", tb.strip()[-3000:], "```", ""]
    report = "\n".join(lines) + "\n"
    print()
    print(report)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report)
        print(f"report written to {out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
