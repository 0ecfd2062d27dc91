"""`posekit report compare A/report.json B/report.json --out DIR`: two evaluation reports side by side."""
from __future__ import annotations


def cmd_report(args) -> int:
    from posekit.engine.report import compare_reports
    if args.action != "compare":
        raise ValueError(f"unknown report action {args.action!r}; use: posekit report compare A B --out DIR")
    index = compare_reports(args.a, args.b, args.out)
    print(f"wrote {index}")
    return 0


def add_parsers(add) -> None:
    p = add("report", "compare two evaluation reports (posekit eval ... --report DIR)", cmd_report)
    p.add_argument("action", choices=["compare"], help="compare: per-joint deltas and the samples they disagree on")
    p.add_argument("a", metavar="A", help="the first report folder or its report.json")
    p.add_argument("b", metavar="B", help="the second report folder or its report.json")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the comparison (index.html, compare.json)")
