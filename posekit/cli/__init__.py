"""`posekit` command line. Thin: every verb calls the same Python API a user would."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

EXAMPLES = {
    "train": """examples:
  posekit train configs/mpii_synthetic.yaml
  posekit train mpii_synthetic                     # a recipe shipped with posekit, by name
  posekit train configs/mpii_hourglass4.yaml train.lr=1.0e-4 train.max_steps=2000 data.root=/data/mpii
  posekit train configs/dogs_mobilenetv2.yaml model.init_from=runs/dogs/best.pt
  posekit train configs/mpii_hourglass4.yaml train.resume=runs/mpii_hourglass4      # continue a run
  posekit train configs/mpii_hourglass4.yaml train.performance=20                  # samples/s only
  torchrun --nproc_per_node=4 -m posekit train configs/mpii_hourglass8.yaml       # DDP""",
    "eval": """examples:
  posekit eval runs/mpii_hourglass4/best.pt data.root=/data/mpii   # the checkpoint's own config
  posekit eval runs/mpii_hourglass4                                # a run folder: its best.pt
  posekit eval configs/mpii_hourglass4.yaml checkpoint=runs/mpii_hourglass4/best.pt
  posekit eval configs/h36m_gmh_mdn.yaml checkpoint=runs/h36m/best.pt data.root=/data/h36m
  posekit eval configs/mpii_hourglass4.yaml --oracle data.dataset=mpii   # the codec's ceiling on your labels
  posekit eval openpose_vgg19.cmu data.root=/data/coco           # published weights (posekit weights list)""",
    "models": """examples:
  posekit models                    # names, family, skeleton, input size (nothing is built)
  posekit models --params           # also the exact parameter counts
  posekit models --json --family hourglass""",
    "demo": """examples:
  posekit demo                      # every family, about 9 minutes on 2 CPU cores
  posekit demo --families hourglass --out runs/demo""",
    "convert": """examples:
  posekit convert cmu-openpose body_pose_model.pth --out runs/cmu/cmu_openpose.pt
  posekit eval configs/coco_openpose.yaml checkpoint=runs/cmu/cmu_openpose.pt data.root=/data/coco""",
    "data": """examples:
  posekit data coco-masks annotations/person_keypoints_train2017.json train2017 --out masks/train2017
  posekit train configs/coco_openpose.yaml data.mask_cache=masks/train2017 ...""",
    "bench": """examples:
  posekit bench                     # list the benchmarks
  posekit bench trainer_overhead    # run benchmarks/bench_trainer_overhead.py""",
}


def _split_overrides(items: list[str]) -> tuple[list[str], dict]:
    """Separate `key=value` overrides from the special `checkpoint=PATH`."""
    overrides, special = [], {}
    for item in items:
        if item.startswith("checkpoint="):
            special["checkpoint"] = item.split("=", 1)[1]
        else:
            overrides.append(item)
    return overrides, special


def cmd_train(args) -> int:
    from posekit.engine.recipes import load_config
    from posekit.engine.trainer import train
    cfg = load_config(args.config, args.overrides)
    run_dir = train(cfg)
    if not cfg.train.performance and os.environ.get("RANK", "0") == "0":
        print(f"run saved in {run_dir}")
    return 0


def _is_checkpoint_path(text: str) -> bool:
    """The first argument of `posekit eval` names a checkpoint (a file that is no YAML, or a run
    folder holding best.pt/last.pt) rather than a recipe."""
    p = Path(text)
    if p.is_dir():
        return (p / "best.pt").is_file() or (p / "last.pt").is_file()
    return p.suffix.lower() in (".pt", ".pth", ".ckpt") or (p.is_file() and p.suffix.lower() not in (".yaml", ".yml"))


def cmd_eval(args) -> int:
    from posekit.engine.evaluation import evaluate_checkpoint
    from posekit.engine.recipes import load_config
    from posekit.engine.weights import resolve_checkpoint
    overrides, special = _split_overrides(args.overrides)
    checkpoint = args.checkpoint or special.get("checkpoint")
    checkpoint = str(resolve_checkpoint(checkpoint)) if checkpoint else checkpoint  # a weights name: its checkpoint
    if args.config:
        args.config = str(resolve_checkpoint(args.config))
    recorder = None
    if args.report:
        from posekit.engine.report import ReportRecorder, check_report_dir
        check_report_dir(args.report)  # before the evaluation, not after it
        recorder = ReportRecorder()
    if not args.config:
        raise ValueError("give a checkpoint (a .pt file or a run folder) or a recipe: posekit eval runs/NAME/best.pt, "
                         "or posekit eval RECIPE checkpoint=PATH (--oracle: a recipe alone)")
    if _is_checkpoint_path(args.config):
        if checkpoint:
            raise ValueError(f"{args.config} is a checkpoint and checkpoint={checkpoint} another; "
                             "give one (and a recipe first if the checkpoint's own config should not be used)")
        metrics = evaluate_checkpoint(None, args.config, oracle=args.oracle, overrides=overrides, recorder=recorder)
        checkpoint = args.config
    else:
        if not checkpoint and not args.oracle:
            raise ValueError("give the weights as checkpoint=PATH (or --oracle to score the codec), "
                             "or a checkpoint alone: posekit eval runs/NAME/best.pt")
        cfg = load_config(args.config, overrides)
        metrics = evaluate_checkpoint(cfg, checkpoint, oracle=args.oracle, recorder=recorder)
    if recorder is not None:
        from posekit.engine.report import provenance, write_report
        prov = provenance(recorder.task.cfg, None if args.oracle else checkpoint, oracle=args.oracle)
        print(f"report: {write_report(args.report, metrics=metrics, recorder=recorder, prov=prov)}")
    if args.oracle:
        print("oracle: ground truth -> targets -> decode, no network (the codec's ceiling on this data)")
    table = metrics.pop("table", None)
    if table:
        print(table)
    width = max((len(k) for k in metrics), default=0)
    for k, v in metrics.items():
        print(f"{k:<{width}}  {v:.4f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(metrics, indent=1, default=float))
    return 0


def cmd_models(args) -> int:
    from posekit.models.registry import model_table
    params = bool(args.params or args.json)  # exact counts: built on the meta device (shapes only)
    rows = model_table(args.family, params=params)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    header = (f"{'name':<20} {'family':<10} {'skeleton':<17} {'input':<12}"
              + (f" {'params':>12} {'trainable':>12}" if params else "") + "  description")
    print(header)
    print("-" * len(header))
    for r in rows:
        counts = f" {r['params']:>12,} {r['trainable_params']:>12,}" if params else ""
        print(f"{r['name']:<20} {r['family']:<10} {r['skeleton']:<17} {'x'.join(map(str, r['input_size'])):<12}"
              f"{counts}  {r['description']}")
    if not params:
        print("(parameter counts: posekit models --params)")
    return 0


def cmd_demo(args) -> int:
    from posekit.engine.demo import run_demo
    run_demo(out_dir=Path(args.out), families=args.families, budget_s=args.budget, steps=args.steps,
             steps_scale=args.steps_scale, smoke=args.smoke)
    return 0


def cmd_convert(args) -> int:
    from posekit.engine.convert import convert_cmu_openpose
    path = convert_cmu_openpose(args.weights, args.out, recipe=args.recipe, overrides=args.overrides)
    print(f"wrote {path}: use it with posekit eval/predict/export")
    return 0


def _benchmark_folders() -> list[Path]:
    """Where benchmark scripts may be: ./benchmarks and the checkout around this package, then
    the copy a wheel installs as data under <prefix>/share/posekit/benchmarks (the prefix of
    this environment, of --user, or a `pip install --target` folder)."""
    import site
    import sysconfig
    folders = [Path.cwd() / "benchmarks", Path(__file__).resolve().parents[2] / "benchmarks"]
    share = Path("share") / "posekit" / "benchmarks"
    try:
        from importlib.metadata import PackageNotFoundError, distribution
        try:
            dist = distribution("posekit")
            # the distribution's own root (a --target install keeps share/ beside the package)
            folders.append(Path(dist.locate_file("")) / share)
            for f in dist.files or []:
                if Path(str(f)).name == "RESULTS.md" and "share" in Path(str(f)).parts:
                    folders.append(Path(dist.locate_file(f)).parent)
        except PackageNotFoundError:
            pass
    except ImportError:  # pragma: no cover
        pass
    for prefix in (sysconfig.get_paths().get("data"), sys.prefix, getattr(site, "USER_BASE", None)):
        if prefix:
            folders.append(Path(prefix) / share)
    # absolute and normalised (no `..`, no path relative to a distribution's empty root): what is shown
    return list(dict.fromkeys(f.resolve() for f in folders))


def _benchmark_scripts() -> dict[str, Path]:
    """{name: script} from the first folder of `_benchmark_folders` holding bench_*.py files."""
    folders = _benchmark_folders()
    for folder in folders:
        scripts = {p.stem[len("bench_"):]: p for p in sorted(folder.glob("bench_*.py"))}
        if scripts:
            return scripts
    raise FileNotFoundError(f"no benchmark scripts (bench_*.py) found; looked in: "
                            f"{', '.join(dict.fromkeys(str(f) for f in folders))}")


def cmd_bench(args) -> int:
    import subprocess
    scripts = _benchmark_scripts()
    if not args.name:
        folder = next(iter(scripts.values())).parent
        print(f"benchmarks in {folder} (run with `posekit bench NAME [ARGS]`):")
        for name in scripts:
            print(f"  {name}")
        return 0
    if args.name not in scripts:
        raise ValueError(f"unknown benchmark {args.name!r}; available: {', '.join(scripts)}")
    return subprocess.call([sys.executable, str(scripts[args.name]), *args.args])


def package_version() -> str:
    """The installed distribution's version (importlib.metadata), else posekit.__version__."""
    try:
        from importlib.metadata import PackageNotFoundError, version
        try:
            return version("posekit")
        except PackageNotFoundError:
            pass
    except ImportError:  # pragma: no cover
        pass
    import posekit
    return posekit.__version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="posekit", description="Keypoint and pose estimation: train, "
                                     "evaluate, predict, export.")
    parser.add_argument("--version", action="version", version=f"posekit {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name, help_text, fn):
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=EXAMPLES.get(name),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(fn=fn)
        return p

    p = add("train", "train a recipe (YAML) with key=value overrides", cmd_train)
    p.add_argument("config", help="recipe YAML path, or the name of a recipe shipped with posekit")
    p.add_argument("overrides", nargs="*", help="key=value, nested keys with dots (train.lr=1.0e-4)")

    p = add("eval", "evaluate a checkpoint on its own stored config's or a recipe's validation data", cmd_eval)
    p.add_argument("config", metavar="CHECKPOINT_OR_RECIPE", nargs="?", help="a checkpoint (.pt) or run folder: evaluated "
                   "with the config stored in it; or a recipe, with checkpoint=PATH")
    p.add_argument("overrides", nargs="*", help="checkpoint=PATH and key=value overrides")
    p.add_argument("--checkpoint", help="same as checkpoint=PATH")
    p.add_argument("--json", help="also write the metrics to this JSON file")
    p.add_argument("--report", metavar="DIR", help="also write a static report (index.html, figures, report.json): "
                   "metric tables, error analysis, worst and typical samples, what was evaluated")
    p.add_argument("--oracle", action="store_true", help="score the ground truth encoded to targets and decoded "
                   "again, with no model: the codec's ceiling, and the first check of your own annotations")

    from posekit.cli import predict as predict_cli
    predict_cli.add_parsers(add)
    from posekit.cli import report as report_cli
    report_cli.add_parsers(add)

    p = add("models", "list the registered models", cmd_models)
    p.add_argument("--json", action="store_true", help="machine-readable list (with parameter counts)")
    p.add_argument("--params", action="store_true", help="also count the parameters at default arguments")
    p.add_argument("--family", help="only this family's models")

    p = add("demo", "train briefly, evaluate, predict and plot every family on synthetic data", cmd_demo)
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--families", nargs="*", help="subset of families (default: all)")
    p.add_argument("--budget", type=float, default=1800.0, help="safety cap on the total training seconds; the "
                   "demo is sized by steps, so a slow machine takes longer but still shows learning")
    p.add_argument("--steps", type=int, default=None, help="train every family this many steps (default: its plan)")
    p.add_argument("--steps-scale", type=float, default=1.0, help="multiply every family's planned steps")
    p.add_argument("--smoke", action="store_true", help="tiny data and models: checks the wiring in seconds")

    p = add("convert", "import weights trained elsewhere as a posekit checkpoint", cmd_convert)
    p.add_argument("kind", choices=["cmu-openpose"], help="cmu-openpose: CMU's COCO body model (PyTorch state dict)")
    p.add_argument("weights", help="the weights file")
    p.add_argument("--out", required=True, help="the posekit checkpoint to write")
    p.add_argument("--recipe", default="coco_openpose", help="data/eval settings stored with it")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    from posekit.cli import data as data_cli
    EXAMPLES["data"] = data_cli.EPILOG
    p = add("data", data_cli.HELP, data_cli.run)
    data_cli.add_arguments(p)

    p = add("bench", "list or run the benchmarks (benchmarks/ of a checkout, or those installed with posekit)",
            cmd_bench)
    p.add_argument("name", nargs="?", help="benchmark to run (omit to list them)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the benchmark script")

    from posekit.cli import lift
    p = add("lift", lift.HELP, lift.run)
    lift.add_arguments(p)

    from posekit.cli import weights as weights_cli
    EXAMPLES["weights"] = weights_cli.EPILOG
    p = add("weights", weights_cli.HELP, weights_cli.run)
    weights_cli.add_arguments(p)
    return parser


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv: list[str] | None = None) -> int:
    """Run one verb. Any error is ONE line on stderr, `posekit VERB: error: MESSAGE`, exit code 2
    (POSEKIT_DEBUG=1 re-raises it with its traceback); Ctrl-C and SystemExit pass through."""
    from posekit.config import ConfigError, MissingExtraError, missing_extra
    parser = build_parser()
    # `key=value` overrides may follow flags (`posekit eval CONFIG --oracle data.root=...`)
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any("=" not in e or e.startswith("-") for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides) + extra
    try:
        code = int(args.fn(args) or 0)
        sys.stdout.flush()  # a closed pipe (`| head`) is seen here, not at interpreter exit
        return code
    except BrokenPipeError:
        # the reader went away (`posekit models | head`): exit quietly, the standard recipe: point
        # stdout at devnull so the interpreter's final flush cannot fail again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except Exception as e:
        if os.environ.get("POSEKIT_DEBUG"):
            raise
        if isinstance(e, ImportError):  # torch (or another extra) absent: the install line, not a traceback
            onnx_file = str(getattr(args, "checkpoint", "") or "").lower().endswith(".onnx")
            hint = ("an .onnx file predicts without it unless --detector, --track, --set or a --device other than "
                    "cpu is given") if args.command == "predict" and onnx_file else None
            e = missing_extra(e, f"posekit {args.command}", hint) or e
        if isinstance(e, RecursionError):
            message = "the input is nested too deeply to process (RecursionError)"
        elif isinstance(e, KeyError):
            message = str(e.args[0]) if e.args else "KeyError"
        elif isinstance(e, (ConfigError, MissingExtraError, ValueError, FileNotFoundError, PermissionError, IsADirectoryError,
                            NotADirectoryError)) or getattr(e, "errno", None) is not None:
            message = str(e) or type(e).__name__  # user errors and OS errors (disk full...) say what happened
        else:
            message = (f"internal error ({type(e).__name__}: {e}); please report it: rerun with POSEKIT_DEBUG=1 "
                       "for the traceback")
        prefix = f"posekit {args.command}:"
        message = _one_line(message)
        while message.startswith(prefix):  # an API message that already names the verb: say it once
            message = message[len(prefix):].lstrip()
        if message.startswith("error:"):
            message = message[len("error:"):].lstrip()
        print(f"{prefix} error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
