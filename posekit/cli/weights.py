"""`posekit weights list|download NAME|path NAME`: the published weights posekit knows."""
from __future__ import annotations

import json

HELP = "list, download or locate published weights (posekit predict openpose_vgg19.cmu photo.jpg uses them)"
EPILOG = """examples:
  posekit weights list                          # name, task, source metric, size, cached, licence
  posekit weights download openpose_vgg19.cmu   # progress bar, resumes a cut download, sha256/size check
  posekit weights path openpose_vgg19.cmu       # where the file is (or goes, to place it by hand)
  posekit predict openpose_vgg19.cmu photo.jpg --out preds/     # any verb takes a weights name

cache: $POSEKIT_HOME/weights when POSEKIT_HOME is set, else torch hub's ($TORCH_HOME/hub/checkpoints)."""


def add_arguments(p) -> None:
    p.add_argument("action", choices=["list", "download", "path"])
    p.add_argument("name", nargs="?", help="a weights name, <model>.<tag> (see `posekit weights list`)")
    p.add_argument("--json", action="store_true", help="list: machine-readable")
    p.add_argument("--no-progress", action="store_true", help="download: no progress bar")


def _rows() -> list[dict]:
    from posekit.engine.weights import is_cached
    from posekit.models.weights import list_weights
    return [{"name": e.name, "task": e.task, "metric": e.metric, "size": e.size_text(), "cached": is_cached(e),
             "licence": e.licence, "kind": e.kind, "url": e.urls[0], "check": e.check_text(),
             "preprocessing": e.preprocessing, "recipe": e.recipe} for e in list_weights()]


def run(args) -> int:
    from posekit.engine.weights import download, ensure_checkpoint
    from posekit.models.weights import converted_path, download_path, get_weights
    if args.action == "list":
        rows = _rows()
        if args.json:
            print(json.dumps(rows, indent=1))
            return 0
        cols = ("name", "task", "metric", "size", "cached", "licence")
        shown = [{c: ("yes" if r[c] is True else "no" if r[c] is False else str(r[c])) for c in cols} for r in rows]
        width = {c: max(len(c), *(len(r[c]) for r in shown)) for c in cols}
        print("  ".join(f"{c:<{width[c]}}" for c in cols).rstrip())
        for r in shown:
            print("  ".join(f"{r[c]:<{width[c]}}" for c in cols).rstrip())
        return 0
    if not args.name:
        raise ValueError(f"posekit weights {args.action} needs a NAME (posekit weights list shows them)")
    entry = get_weights(args.name)
    if args.action == "path":
        made = converted_path(entry)
        print(made if entry.kind == "model" and made.is_file() else download_path(entry))
        return 0
    if entry.kind == "model":
        path = ensure_checkpoint(entry, progress=not args.no_progress)
        print(f"{entry.name}: verified ({entry.check_text()}) and converted: {path}")
    else:
        path = download(entry, progress=not args.no_progress)
        print(f"{entry.name}: verified ({entry.check_text()}): {path} (model.args.pretrained=imagenet uses it)")
    return 0
