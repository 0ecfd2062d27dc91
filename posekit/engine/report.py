"""`posekit eval ... --report DIR`: a static evaluation report that opens from disk.

DIR gets index.html, its PNG figures (matplotlib, headless) and report.json (every number shown,
plus each sample's error, for `posekit report compare`). No server, no network, no JavaScript.

    ReportRecorder  passed to engine.evaluation.evaluate: keeps, per evaluated sample, its error
                    and (for a bounded set: the first `keep` samples and the running worst) the
                    network-input crop with ground truth and prediction in the crop's pixels
    write_report    metric table (protocol named), per-joint table, the family's section(s),
                    gallery (worst and typical samples, GT | prediction, error type), provenance
"""
from __future__ import annotations

import datetime
import hashlib
import heapq
import html
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from posekit.results import json_safe

GALLERY_KEEP = 48  # samples whose pictures are always kept (the same ones for every model: compare)
_SIGMA_WITHOUT_SKELETON = 0.05  # the per-sample error label's OKS sigma where a skeleton declares none


# --- what the eval loop hands over -------------------------------------------------------------------
class ReportRecorder:
    """Collects what the report needs while `evaluate` runs (see module docstring); memory stays
    bounded by `keep + gallery` pictures whatever the split's size."""

    def __init__(self, *, gallery: int = 6, keep: int = GALLERY_KEEP):
        self.gallery, self.keep = gallery, keep
        self.samples: list[dict] = []  # key, split, error, label, path
        self.pictures: dict[str, tuple] = {}  # key -> (crop RGB, gt (P, K, 3) crop px, pred (P, K, 2) crop px)
        self._worst: list[tuple[float, str]] = []  # min-heap of (error, key): the running worst
        self.task = self.evaluator = None
        self.unit = "% of the crop side"  # what a sample's error is measured in (a section may redefine it)

    def attach(self, task, evaluator) -> None:
        self.task, self.evaluator = task, evaluator

    def update(self, split: str, results: list, batch: dict) -> None:
        images, matrices, gts = batch.get("image"), batch.get("matrix"), batch.get("keypoints")
        if images is None or matrices is None or not hasattr(images, "dim") or images.dim() != 4:
            return  # no image crops (a lifter): its section reads the evaluator's arrays
        paths = batch.get("paths") or [None] * len(results)
        for i, res in enumerate(results):
            key = f"{split}:{len(self.samples)}"
            m = matrices[i].detach().double().cpu().numpy()
            pred = _to_crop(np.asarray(res.keypoints, dtype=np.float64)[..., :2], m)
            gt, g = None, None
            if gts is not None:
                g = gts[i].detach().double().cpu().numpy()
            elif "index" in batch and hasattr(getattr(self.evaluator, "dataset", None), "source"):
                # a bottom-up item carries targets, not keypoints: the people of its source image
                g = np.asarray(self.evaluator.dataset.source[int(batch["index"][i])].keypoints, dtype=np.float64)
            if g is not None:
                g = g[None] if g.ndim == 2 else g
                gt = np.concatenate([_to_crop(g[..., :2], m), g[..., 2:3]], -1)
            same_skeleton = gt is not None and gt.shape[1] == pred.shape[1]
            error = _crop_error(pred, gt, images.shape[-1]) if same_skeleton else float("nan")
            label = _label(pred, gt, res.skeleton) if same_skeleton else ""
            self.samples.append({"key": key, "split": split, "error": error, "label": label,
                                 "path": str(paths[i]) if paths[i] is not None else getattr(res, "path", None)})
            wanted = len(self.samples) <= self.keep
            if np.isfinite(error):
                if len(self._worst) < self.gallery:
                    heapq.heappush(self._worst, (error, key))
                    wanted = True
                elif error > self._worst[0][0]:
                    _, dropped = heapq.heapreplace(self._worst, (error, key))
                    if int(dropped.rpartition(":")[2]) >= self.keep:
                        self.pictures.pop(dropped, None)
                    wanted = True
            if wanted:
                crop = images[i].detach().cpu().numpy().transpose(1, 2, 0)
                if crop.dtype != np.uint8:
                    crop = np.clip(crop * (255.0 if crop.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
                self.pictures[key] = (np.ascontiguousarray(crop), gt, pred, res.skeleton)


def _to_crop(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def _crop_error(pred: np.ndarray, gt: np.ndarray, side: int) -> float:
    """Mean over GT people of the nearest prediction's mean joint distance, in % of the crop side."""
    per_person = []
    for person in gt:
        vis = person[:, 2] > 0
        if not vis.any() or not len(pred):
            continue
        d = np.linalg.norm(np.nan_to_num(pred[:, vis, :2], nan=1e6) - person[vis, :2], axis=-1).mean(-1)
        per_person.append(d.min())
    return float(100.0 * np.mean(per_person) / side) if per_person else float("nan")


def _label(pred: np.ndarray, gt: np.ndarray, skeleton) -> str:
    """The sample's keypoint error types (the taxonomy against its nearest GT person, the others as
    swap candidates), e.g. "2 miss, 1 inversion"; "good" when none."""
    from posekit.metrics.coco_errors import classify_keypoints
    sigmas = (np.asarray(skeleton.sigmas, dtype=np.float64) if skeleton.sigmas is not None
              else np.full(skeleton.num_keypoints, _SIGMA_WITHOUT_SKELETON))
    people = [p for p in gt if (p[:, 2] > 0).any()]
    if not people or not len(pred):
        return ""
    counts: dict[str, int] = {}
    for p_pred in pred:
        d = [np.nanmean(np.linalg.norm(p_pred - p[:, :2], axis=-1)[p[:, 2] > 0]) for p in people]
        own = int(np.nanargmin(d)) if np.isfinite(d).any() else 0
        lab = people[own][people[own][:, 2] > 0, :2]
        area = float(np.prod(np.maximum(lab.max(0) - lab.min(0), 1.0))) if len(lab) > 1 else 1.0
        others = [(p, area) for j, p in enumerate(people) if j != own]
        types, _, _ = classify_keypoints(np.nan_to_num(p_pred, nan=1e6), people[own], area, sigmas,
                                         skeleton.flip_index, others)
        for t in types:
            if t is not None and t != "good":
                counts[t] = counts.get(t, 0) + 1
        if len(gt) == 1:
            break
    return ", ".join(f"{n} {t}" for t, n in sorted(counts.items(), key=lambda kv: -kv[1])) or "good"


# --- provenance ------------------------------------------------------------------------------------------
def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def provenance(cfg, checkpoint: str | Path | None, *, oracle: bool = False) -> dict:
    """What was evaluated: checkpoint (path, sha256), the data files the config names (with sizes),
    the config, posekit's version and the date."""
    from posekit._version import __version__
    out: dict[str, Any] = {"posekit_version": __version__,
                           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                           "oracle": bool(oracle), "task": getattr(cfg, "task", None)}
    if checkpoint:
        from posekit.engine.evaluation import find_checkpoint
        p = find_checkpoint(checkpoint)
        out["checkpoint"] = {"path": str(p), "sha256": sha256_of(p), "bytes": p.stat().st_size}
    from posekit.config import config_to_dict
    raw = config_to_dict(cfg)
    out["config"] = raw
    files = []
    for key, value in (raw.get("data") or {}).items():
        if isinstance(value, str) and value and Path(value).exists():
            p = Path(value)
            files.append({"key": f"data.{key}", "path": str(p),
                          "bytes": p.stat().st_size if p.is_file() else None, "kind": "file" if p.is_file() else "folder"})
    out["data_files"] = files
    return out


# --- writing ------------------------------------------------------------------------------------------------
def check_report_dir(root: str | Path) -> None:
    """Refuse, before any work, a --report folder that holds something other than a posekit report."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ValueError(f"--report {root}: exists and is not a folder; give a new folder")
    if root.is_dir() and any(root.iterdir()) and not (root / "report.json").is_file():
        raise ValueError(f"--report {root}: the folder is not empty and holds no posekit report; "
                         "give a new or empty folder (a report is only ever replaced by a report)")


class _Out:
    """The report folder: refuses a folder that holds something other than a posekit report,
    writes each file atomically (temporary name + rename)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        check_report_dir(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.files: list[str] = []

    def write(self, name: str, data: bytes | str) -> str:
        from posekit.engine.checkpoint import _atomic_write
        data = data.encode() if isinstance(data, str) else data
        _atomic_write(self.root / name, lambda f: f.write(data))
        self.files.append(name)
        return name


def _protocol(metrics: dict, evaluator) -> str:
    kind = type(evaluator).__name__ if evaluator is not None else ""
    if "pckh" in metrics:
        return ("MPII PCKh@0.5: a joint is correct within 0.5 x the head segment (0.6 x the head box diagonal), "
                "the official table's parts and mean (pelvis, thorax excluded); torso PCK@0.2 beside it")
    if "AP" in metrics:
        return ("COCO OKS keypoint AP/AR (pycocotools COCOeval), OKS thresholds .50:.05:.95, 20 detections per "
                "image; medium 32^2-96^2 px, large > 96^2 px GT area" + ("; PCK@0.1 x max(box w, h) on GT boxes"
                                                                            if "pck" in metrics else ""))
    if "pck_seg" in metrics or "mean_px_error" in metrics and "pck" in metrics:
        return ("PCK@0.1 x max(bbox w, h), pooled over labelled joints (mmpose); StanfordExtra/WLDO "
                "PCK@0.15 x sqrt(segmentation area), mean over images, where areas are known")
    if "p1_best" in metrics:
        return ("Human3.6M Protocol #1 (MPJPE, mm, root-relative) and #2 (P-MPJPE, after Procrustes); "
                "best = closest of the M hypotheses (oracle), ML = largest mixing weight; mean over actions")
    if "nme" in metrics:
        return ("MAFL/MTFL inter-ocular NME (% of the eye distance), linear regressor from discovered to the 5 "
                "annotated points fitted on the 'fit' split, scored on 'val'")
    return kind or "family metric"


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, (int, np.integer)) or (isinstance(v, float) and float(v).is_integer() and abs(v) >= 10):
        return f"{int(v)}"
    if isinstance(v, (float, np.floating)):
        return "nan" if not np.isfinite(v) else f"{v:.4g}"
    return html.escape(str(v))


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _auc(alphas: np.ndarray, curve: np.ndarray) -> float:
    """Area under a PCK curve normalised by the threshold range (100 = every joint at the smallest)."""
    return float(np.trapezoid(curve, alphas) / (alphas[-1] - alphas[0])) if hasattr(np, "trapezoid") else \
        float(np.trapz(curve, alphas) / (alphas[-1] - alphas[0]))


def _pck_curves(norm_dist: np.ndarray, visible: np.ndarray, alphas: np.ndarray, names: list[str],
                groups: list[tuple[str, tuple[int, ...]]] | None = None, strict: bool = False) -> dict:
    """PCK (%) vs threshold per joint (or per group of joints) and overall, from distances divided
    by their normaliser (N, K); `strict` counts d < t (StanfordExtra) instead of d <= t."""
    out = {}
    groups = groups or [(n, (j,)) for j, n in enumerate(names)]
    for name, joints in groups:
        sel = visible[:, list(joints)]
        if not sel.any():
            continue
        d = norm_dist[:, list(joints)][sel]
        out[name] = np.array([100.0 * np.mean(d < a if strict else d <= a) for a in alphas])
    d = norm_dist[visible]
    if d.size:
        out["all"] = np.array([100.0 * np.mean(d < a if strict else d <= a) for a in alphas])
    return out


class _Report:
    def __init__(self, out: _Out):
        self.out, self.sections, self.data = out, [], {}

    def figure(self, name: str, png: bytes, caption: str) -> str:
        self.out.write(name, png)
        return (f'<figure><img src="{html.escape(name)}" alt="{html.escape(caption)}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>")

    def section(self, title: str, body: str) -> None:
        self.sections.append(f"<section><h2>{html.escape(title)}</h2>{body}</section>")


def write_report(out_dir: str | Path, *, metrics: dict, recorder: ReportRecorder, prov: dict,
                 title: str | None = None) -> Path:
    """Write the report of one evaluation (see the module docstring); returns index.html's path."""
    from posekit.metrics import metric_unit
    out = _Out(out_dir)
    rep = _Report(out)
    evaluator, task = recorder.evaluator, recorder.task
    scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float, np.floating, np.integer))}
    overall = {k: v for k, v in scalars.items() if "/" not in k}
    per_joint = {k: v for k, v in scalars.items() if "/" in k}
    protocol = _protocol(metrics, evaluator)
    rep.data |= {"protocol": protocol, "metrics": {k: float(v) for k, v in scalars.items()}}
    rep.section("Metrics", f"<p class=protocol>Protocol: {html.escape(protocol)}</p>"
                + _table(["metric", "value", "unit"], [[k, float(v), metric_unit(k)] for k, v in overall.items()]))
    if per_joint:
        by_base: dict[str, dict[str, float]] = {}
        for k, v in per_joint.items():
            base, _, joint = k.partition("/")
            by_base.setdefault(joint, {})[base] = float(v)
        bases = sorted({k.partition("/")[0] for k in per_joint})
        rep.section("Per joint", _table(["joint", *bases], [[j, *[row.get(b) for b in bases]]
                                                             for j, row in by_base.items()]))
        rep.data["per_joint"] = by_base
    kind = type(evaluator).__name__ if evaluator is not None else ""
    section = {"PCKhEvaluator": _section_pckh, "PCKBoxEvaluator": _section_dogs,
               "TopDownCOCOEvaluator": _section_coco, "COCOEvaluator": _section_coco,
               "MPJPEEvaluator": _section_3d, "RegressionEvaluator": _section_fse}.get(kind)
    if section is not None:
        section(rep, evaluator, task, metrics, recorder)
    _section_gallery(rep, recorder)
    _section_provenance(rep, prov)
    rep.data["provenance"] = prov
    rep.data["samples"] = [{k: s[k] for k in ("key", "error", "label", "path")} for s in recorder.samples]
    out.write("report.json", json.dumps(json_safe(rep.data), indent=1, allow_nan=False))
    heading = html.escape(title or f"posekit evaluation: {prov.get('task') or kind}")
    page = (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{heading}</title>"
            f"<style>{_CSS}</style></head><body><h1>{heading}</h1>"
            f"<nav>{' | '.join(_anchor(s) for s in rep.sections)}</nav>{''.join(rep.sections)}"
            "<footer>written by posekit; every number here is in report.json</footer></body></html>")
    out.write("index.html", page)
    return out.root / "index.html"


def _anchor(section: str) -> str:
    title = section.split("<h2>", 1)[1].split("</h2>", 1)[0]
    return f"<span>{title}</span>"


_CSS = ("body{font-family:sans-serif;max-width:1200px;margin:1em auto;color:#222}table{border-collapse:collapse;"
        "margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}th{background:#eee}"
        "td:first-child{text-align:left}figure{display:inline-block;margin:.5em;vertical-align:top}"
        "figure img{max-width:100%}figcaption{font-size:85%;color:#555;max-width:560px}section{margin-bottom:2em}"
        ".protocol{background:#f6f6f6;padding:.4em}nav{color:#777;margin-bottom:1em}.gallery figure img{width:360px}")


# --- family sections -----------------------------------------------------------------------------------------
def _section_pckh(rep: _Report, ev, task, metrics, recorder) -> None:
    from posekit.metrics.mpii import EXCLUDED_FROM_MEAN, PCKH_PARTS
    from posekit.viz.report import curves_png
    pred, gt, head = np.stack(ev.pred), np.concatenate(ev.gt), np.concatenate(ev.head)
    has = np.isfinite(head) & (head > 0)
    pred, gt, head = pred[has], gt[has], head[has]
    visible = gt[..., 2] > 0
    visible[:, list(EXCLUDED_FROM_MEAN)] = False
    dist = np.linalg.norm(pred[..., :2] - gt[..., :2], axis=-1) / head[:, None]
    alphas = np.linspace(0.0, 0.5, 51)
    curves = _pck_curves(dist, visible, alphas, [], groups=list(PCKH_PARTS))
    curves["Mean"] = curves.pop("all")
    aucs = {k: _auc(alphas, v) for k, v in curves.items()}
    fig = rep.figure("pckh_curve.png", curves_png(alphas, curves, xlabel="alpha (x head segment)",
                                                  ylabel="PCKh@alpha (%)", title="MPII PCKh vs threshold",
                                                  highlight="Mean"), "PCKh@alpha per part, mean thick")
    rep.section("PCKh vs threshold", fig + _table(["part", "PCKh@0.1", "PCKh@0.5", "AUC 0-0.5"],
                                                   [[k, v[10], v[50], aucs[k]] for k, v in curves.items()]))
    rep.data["pck_curves"] = {"protocol": "PCKh@alpha (MPII)", "alpha": alphas.tolist(),
                              "curves": {k: v.tolist() for k, v in curves.items()}, "auc": aucs}


def _section_dogs(rep: _Report, ev, task, metrics, recorder) -> None:
    from posekit.metrics.pck import segmentation_normalizer
    from posekit.viz.report import curves_png
    pred, gt, box = np.stack(ev.pred), np.concatenate(ev.gt), np.concatenate(ev.box)
    seg = np.concatenate(ev.seg_area)
    names = list(task.skeleton.keypoints) if hasattr(task, "skeleton") else [str(j) for j in range(gt.shape[1])]
    visible = gt[..., 2] > 0
    d = np.linalg.norm(pred[..., :2] - gt[..., :2], axis=-1)
    alphas = np.linspace(0.0, 0.3, 31)
    body = ""
    data = {"alpha": alphas.tolist()}
    box_curves = _pck_curves(d / np.maximum(box[:, 2:4].max(1), 1e-9)[:, None], visible, alphas, names)
    aucs = {k: _auc(alphas, v) for k, v in box_curves.items()}
    body += rep.figure("pck_bbox_curve.png", curves_png(alphas, box_curves, xlabel="alpha (x max(bbox w, h))",
                                                        ylabel="PCK (%)", title="PCK@alpha x max(bbox w, h) (mmpose)",
                                                        highlight="all"), "PCK vs threshold, box protocol")
    data["bbox"] = {"curves": {k: v.tolist() for k, v in box_curves.items()}, "auc": aucs}
    rows = [["PCK@alpha x max(bbox w, h) (d <= t)", box_curves["all"][10], aucs["all"]]]
    known = np.isfinite(seg)
    if known.any():
        norm = segmentation_normalizer(seg[known])
        dn, vis = d[known] / norm[:, None], visible[known]
        # WLDO: the mean over images of each image's fraction
        per_image = np.array([[np.mean(dn[i][vis[i]] < a) if vis[i].any() else np.nan for a in alphas]
                              for i in range(len(dn))])
        seg_curve = 100.0 * np.nanmean(per_image, 0)
        seg_auc = _auc(alphas, seg_curve)
        body += rep.figure("pck_seg_curve.png", curves_png(alphas, {"all (per-image mean)": seg_curve},
                                                           xlabel="alpha (x sqrt(segmentation area))", ylabel="PCK (%)",
                                                           title="PCK@alpha x sqrt(seg area) (StanfordExtra/WLDO)"),
                           "PCK vs threshold, segmentation protocol")
        data["seg"] = {"curve": seg_curve.tolist(), "auc": seg_auc, "images": int(known.sum())}
        rows.append(["PCK@alpha x sqrt(seg area) (d < t)", seg_curve[10], seg_auc])
    rep.section("PCK vs threshold (both protocols)", body + _table(["protocol", "PCK@0.1", "AUC 0-0.3"], rows))
    rep.data["pck_curves"] = data


def _coco_inputs(ev):
    """(gt dict, result dicts, sigmas, skeleton) of a COCO evaluator, or None when it kept none."""
    if hasattr(ev, "coco_inputs"):
        gt, dets = ev.coco_inputs
        return gt, dets, ev.sigmas, ev.skeleton
    scores = getattr(ev, "scores", None)  # the top-down evaluator (metrics.topdown.TopDownCOCOScores)
    if scores is not None and getattr(scores, "coco_inputs", None) is not None:
        gt, dets = scores.coco_inputs  # set by compute(): also right for a partial split (max_samples)
        return gt, dets, scores.sigmas, scores.skeleton
    if scores is not None and hasattr(scores, "coco_results") and len(scores.items) == len(ev.dataset):
        from posekit.metrics.coco import build_coco_gt
        images = ev.dataset.source.images
        chosen = list(range(len(images)))
        samples = [images.peek(i) if hasattr(images, "peek") else images[i] for i in chosen]
        ids = {i: s.meta.get("image_id", i) for i, s in zip(chosen, samples)}
        gt = build_coco_gt(samples, skeleton=scores.skeleton)
        return gt, scores.coco_results(chosen, ids), scores.sigmas, scores.skeleton
    if hasattr(ev, "dets") and hasattr(ev, "gt") and hasattr(ev, "image_ids"):
        from posekit.skeletons import get_skeleton
        ids = set(ev.image_ids)
        gt = {**ev.gt, "images": [im for im in ev.gt["images"] if im["id"] in ids],
              "annotations": [a for a in ev.gt["annotations"] if a["image_id"] in ids]}
        sk = get_skeleton("coco17")
        return gt, ev.dets, sk.oks_sigmas(), sk
    return None


def _section_coco(rep: _Report, ev, task, metrics, recorder) -> None:
    from posekit.metrics.coco_errors import FIXABLE_ERRORS, analyze_keypoint_errors
    from posekit.viz.report import bars_png, curves_png, error_breakdown_png
    inputs = _coco_inputs(ev)
    if inputs is None:
        rep.section("COCO error analysis", "<p>No error analysis: this evaluator kept no COCO ground truth "
                    "and results to re-score.</p>")
        return
    gt, dets, sigmas, sk = inputs
    a = analyze_keypoint_errors(gt, dets, sigmas=sigmas, flip_index=sk.flip_index, keypoint_names=list(sk.keypoints))
    names = a["keypoint_names"]
    if not a["matched"]:
        rep.section("COCO error analysis (Ronchi-Perona)", f"<p>None of the {a['results']} detections matched a GT "
                    f"person at OKS >= {a['thresholds']['localization_oks']}: there are no keypoint errors to classify "
                    "(is the model trained?).</p>")
        rep.data["coco_errors"] = {k: v for k, v in a.items() if k != "detections"}
        return
    body = (f"<p>{a['matched']} of {a['results']} detections matched a GT person at OKS >= "
            f"{a['thresholds']['localization_oks']}; per labelled keypoint: good ks >= {a['thresholds']['good_ks']}, "
            f"jitter {a['thresholds']['jitter_ks']} <= ks < {a['thresholds']['good_ks']}, inversion = nearest to the "
            "mirrored joint, swap = nearest to another person's joint, miss = ks < "
            f"{a['thresholds']['jitter_ks']} to all (Ronchi &amp; Perona, ICCV 2017).</p>")
    body += rep.figure("coco_errors.png", error_breakdown_png(names, a["counts"], title="keypoint error types"),
                       "Share of each error type per keypoint")
    body += _table(["keypoint", "good", "jitter", "inversion", "swap", "miss"],
                   [[n, *[a["counts"][t][j] for t in ("good", "jitter", "inversion", "swap", "miss")]]
                    for j, n in enumerate(names)])
    gains = [a["ap_gain"][t] for t in FIXABLE_ERRORS]
    body += rep.figure("coco_ap_gain.png", bars_png(list(FIXABLE_ERRORS), {"AP gain": gains}, ylabel="AP gain",
                                                    title=f"AP gained by fixing one error type (AP = {a['ap']['AP']:.3f})"),
                       "Each type fixed alone, re-scored with COCOeval")
    body += _table(["fixed", "AP alone", "gain", "AP fixing this and the ones before"],
                   [[t, a["ap_fixed"][t]["AP"], a["ap_gain"][t], cum] for t, (_, cum) in
                    zip(FIXABLE_ERRORS, a["ap_cumulative"])])
    vis = a["ap_by_visible"]
    sizes = {"medium": a["ap_by_size"]["medium"], "large": a["ap_by_size"]["large"]}
    body += rep.figure("coco_ap_by.png", bars_png([*sizes, *[f"{k} kp" for k in vis]],
                                                  {"AP": [*sizes.values(), *[v["AP"] for v in vis.values()]]},
                                                  ylabel="AP", title="AP by object size and by visible keypoints"),
                       "AP by GT size (COCO ranges) and by the number of labelled keypoints (others ignored)")
    body += _table(["people with", "GT people", "AP"], [[f"{k} keypoints", v["people"], v["AP"]] for k, v in vis.items()])
    rep.section("COCO error analysis (Ronchi-Perona)", body)
    rep.data["coco_errors"] = {k: v for k, v in a.items() if k != "detections"}
    held = ev if hasattr(ev, "pred") else getattr(ev, "scores", None)
    if held is not None and getattr(held, "pred", None):
        pred, gtk, box = np.stack(held.pred), np.concatenate(held.gt), np.concatenate(held.box)
        d = np.linalg.norm(pred - gtk[..., :2], axis=-1) / np.maximum(box[:, 2:4].max(1), 1e-9)[:, None]
        alphas = np.linspace(0.0, 0.3, 31)
        curves = _pck_curves(d, gtk[..., 2] > 0, alphas, list(sk.keypoints))
        fig = rep.figure("pck_curve.png", curves_png(alphas, curves, xlabel="alpha (x max(box w, h))", ylabel="PCK (%)",
                                                     title="PCK@alpha on GT boxes", highlight="all"),
                         "PCK vs threshold per joint")
        rep.section("PCK vs threshold", fig + f"<p>AUC 0-0.3: {_auc(alphas, curves['all']):.2f}</p>")
        rep.data["pck_curves"] = {"alpha": alphas.tolist(), "curves": {k: v.tolist() for k, v in curves.items()}}


def _section_3d(rep: _Report, ev, task, metrics, recorder) -> None:
    from posekit.metrics.mpjpe import hypothesis_errors, per_action_mean, select_hypothesis
    from posekit.skeletons import get_skeleton
    from posekit.viz.report import bars_png, figure_3d_png, histogram_png
    hyps, weights = np.stack(ev.hyps), np.stack(ev.weights)
    gt, actions = np.concatenate(ev.gt), np.concatenate(ev.actions)
    names = list(ev.dataset.action_names)
    ml = np.argmax(weights, axis=1)
    e = {"p1": hypothesis_errors(hyps, gt), "p2": hypothesis_errors(hyps, gt, procrustes=True)}
    frame = {f"{p}_{sel}": (errs.min(1) if sel == "best" else select_hypothesis(errs, ml))
             for p, errs in e.items() for sel in ("best", "ml")}
    per_action = {k: per_action_mean(v, actions, names)[0] for k, v in frame.items()}
    acts = [a for a in names if a in per_action["p1_ml"]]
    body = rep.figure("mpjpe_per_action.png",
                      bars_png(acts, {k: [per_action[k][a] for a in acts] for k in frame}, ylabel="mm",
                               title="MPJPE per action: P1 / P2, best of M / most likely"),
                      "Protocol #1 (MPJPE) and #2 (P-MPJPE) per action")
    body += _table(["action", "P1 best", "P1 ML", "P2 best", "P2 ML"],
                   [[a, *[per_action[k][a] for k in ("p1_best", "p1_ml", "p2_best", "p2_ml")]] for a in acts])
    rep.section("3-D: MPJPE per action", body)
    chosen = hyps[np.arange(len(hyps)), ml]  # (N, 17, 3)
    per_joint = np.linalg.norm(chosen - gt, axis=-1).mean(0)
    sk = get_skeleton("h36m17")
    jn = list(sk.keypoints) if sk.num_keypoints == per_joint.shape[0] else [str(j) for j in range(len(per_joint))]
    body = rep.figure("mpjpe_per_joint.png", bars_png(jn, {"P1 ML": per_joint.tolist()}, ylabel="mm",
                                                      title="MPJPE per joint (most likely hypothesis)"), "per joint")
    mean_pose = (weights[:, :, None, None] * hyps).sum(1) / np.maximum(weights.sum(1), 1e-12)[:, None, None]
    spread = np.linalg.norm(hyps - mean_pose[:, None], axis=-1).mean((1, 2))
    body += rep.figure("hypothesis_spread.png", histogram_png(spread, xlabel="mean distance of the M hypotheses to "
                                                              "their weighted mean (mm)", title="hypothesis spread"),
                       "How far apart the M hypotheses are, per frame")
    gap = frame["p1_ml"] - frame["p1_best"]
    body += (f"<p>Best of M is {np.mean(gap):.1f} mm better than the most likely hypothesis on average "
             f"(median {np.median(gap):.1f}); P2 - P1 (ML) = {np.mean(frame['p2_ml'] - frame['p1_ml']):.1f} mm.</p>")
    rep.section("3-D: per joint, best of M vs most likely, spread", body)
    rep.data["mpjpe"] = {"per_action": per_action, "per_joint": dict(zip(jn, per_joint.tolist())),
                         "spread_mm": {"mean": float(spread.mean()), "median": float(np.median(spread))},
                         "best_vs_ml_gap_mm": float(np.mean(gap))}
    # gallery of frames (no image): the skeletons in 3-D, worst and typical by P1 ML
    order = np.argsort(frame["p1_ml"])
    n = min(recorder.gallery, len(order))
    median = np.median(frame["p1_ml"])
    typical = np.argsort(np.abs(frame["p1_ml"] - median))[:n]
    figs, items = "", []
    for group, idx in (("worst", order[::-1][:n]), ("typical", typical)):
        for i in idx:
            name = f"gallery_{group}_{int(i)}.png"
            caption = f"{group}: frame {int(i)} ({names[int(actions[i])] if int(actions[i]) < len(names) else '?'}), " \
                      f"P1 ML {frame['p1_ml'][i]:.0f} mm, best of M {frame['p1_best'][i]:.0f} mm"
            figs += rep.figure(name, figure_3d_png(chosen[i], gt[i], sk, title=caption), caption)
            items.append({"group": group, "frame": int(i), "file": name, "p1_ml": float(frame["p1_ml"][i])})
    recorder.samples = [{"key": f"frame:{i}", "error": float(v), "label": "", "path": None}
                        for i, v in enumerate(frame["p1_ml"])]
    recorder.pictures = {}
    rep.section("Gallery: worst and typical frames", f"<div class=gallery>{figs}</div>")
    rep.data["gallery"] = items


def _section_fse(rep: _Report, ev, task, metrics, recorder) -> None:
    from posekit.metrics.nme import apply_regressor, fit_landmark_regressor
    from posekit.skeletons import get_skeleton
    from posekit.viz.report import bars_png
    mafl = get_skeleton("mafl5")
    fit_d, fit_a, _ = (np.stack(c) for c in zip(*ev.rows["fit"]))
    val_d, val_a, _ = (np.stack(c) for c in zip(*ev.rows["val"]))
    w = fit_landmark_regressor(fit_d, fit_a, underdetermined=ev.underdetermined)

    def per_point(d, a):
        iod = np.linalg.norm(a[:, 0] - a[:, 1], axis=-1)
        return np.linalg.norm(apply_regressor(w, d) - a, axis=-1) / iod[:, None] * 100

    fit_pp, val_pp = per_point(fit_d, fit_a), per_point(val_d, val_a)
    names = list(mafl.keypoints)
    body = rep.figure("nme_per_point.png", bars_png(names, {"val (held out)": val_pp.mean(0).tolist(),
                                                            "fit (regressor's own images)": fit_pp.mean(0).tolist()},
                                                    ylabel="NME (% inter-ocular)", title="NME per MAFL point"),
                      "NME per point on the scored split and on the images the regressor was fitted on")
    body += _table(["point", "NME val", "NME fit"], [[n, v, f] for n, v, f in zip(names, val_pp.mean(0), fit_pp.mean(0))])
    body += (f"<p>Regressor: {w.shape[0]} inputs ({(w.shape[0] - 1) // 2} discovered points x 2 + bias) to "
             f"{w.shape[1]} outputs, fitted on {len(fit_d)} images "
             f"({'determined' if len(fit_d) >= w.shape[0] else 'UNDER-determined: more fit images needed'}); "
             f"NME fit {fit_pp.mean():.2f} %, val {val_pp.mean():.2f} %"
             f" (a gap means the regressor over-fits its images).</p>")
    rep.section("FSE: NME per MAFL point and the regressor's fit", body)
    rep.data["nme"] = {"per_point_val": dict(zip(names, val_pp.mean(0).tolist())),
                       "per_point_fit": dict(zip(names, fit_pp.mean(0).tolist())),
                       "fit_images": len(fit_d), "val_images": len(val_d)}
    # the gallery: regressed 5 points vs the annotated ones on each kept crop of the scored split
    recorder.unit = "% inter-ocular NME"
    scored = task.eval_splits[-1] if task is not None else "val"
    recorder.samples = [s for s in recorder.samples if s["split"] == scored]
    for key in [k for k in recorder.pictures if not k.startswith(f"{scored}:")]:
        del recorder.pictures[key]
    for key, (crop, gt, pred, _) in list(recorder.pictures.items()):
        if gt is None or gt.shape[1] != mafl.num_keypoints or pred.shape[1] * 2 + 1 != w.shape[0]:
            continue
        five = apply_regressor(w, pred[:1])
        recorder.pictures[key] = (crop, gt, five, mafl)
        sample = next(s for s in recorder.samples if s["key"] == key)
        g = gt[0]
        iod = max(float(np.linalg.norm(g[0, :2] - g[1, :2])), 1e-9)
        sample["error"] = float(np.linalg.norm(five[0] - g[:, :2], axis=-1).mean() / iod * 100)
        sample["label"] = f"NME {sample['error']:.1f} %"


def _section_gallery(rep: _Report, recorder: ReportRecorder) -> None:
    from posekit.viz.report import pair_png
    if not recorder.pictures:
        return
    with_pictures = [s for s in recorder.samples if s["key"] in recorder.pictures and np.isfinite(s["error"])]
    if not with_pictures:
        return
    n = recorder.gallery
    worst = sorted(with_pictures, key=lambda s: -s["error"])[:n]
    errors = np.array([s["error"] for s in recorder.samples if np.isfinite(s["error"])])
    median = float(np.median(errors))
    typical = sorted((s for s in with_pictures if s not in worst), key=lambda s: abs(s["error"] - median))[:n]
    body, items = "", []
    for group, chosen in (("worst", worst), ("typical", typical)):
        body += f"<h3>{group} ({'largest error' if group == 'worst' else f'nearest the median error {median:.2f}'})</h3>"
        body += "<div class=gallery>"
        for s in chosen:
            crop, gt, pred, sk = recorder.pictures[s["key"]]
            name = f"gallery_{s['key'].replace(':', '_')}.png"
            caption = (f"{s['key']}{' ' + Path(s['path']).name if s.get('path') else ''}: error {s['error']:.2f} "
                       f"({recorder.unit}){'; ' + s['label'] if s['label'] else ''}")
            body += rep.figure(name, pair_png(crop, gt, pred, sk), caption)
            items.append({"group": group, "key": s["key"], "file": name, "error": s["error"], "label": s["label"]})
        body += "</div>"
    for key, (crop, gt, pred, sk) in recorder.pictures.items():  # every kept sample, for `report compare`
        if not any(it["key"] == key for it in items) and int(key.rpartition(":")[2]) < recorder.keep:
            rep.out.write(f"samples/{key.replace(':', '_')}.png", pair_png(crop, gt, pred, sk, side=192))
    rep.section("Gallery: worst and typical samples (ground truth | prediction)", body)
    rep.data["gallery"] = items


def _section_provenance(rep: _Report, prov: dict) -> None:
    rows = [["posekit version", prov.get("posekit_version")], ["date (UTC)", prov.get("date")],
            ["task", prov.get("task")], ["oracle (codec round trip, no network)", prov.get("oracle")]]
    ck = prov.get("checkpoint")
    if ck:
        rows += [["checkpoint", ck["path"]], ["checkpoint sha256", ck["sha256"]]]
    for f in prov.get("data_files", ()):
        rows.append([f["key"], f"{f['path']} ({f['kind']}{', ' + str(f['bytes']) + ' bytes' if f['bytes'] else ''})"])
    cfg = json.dumps(json_safe(prov.get("config", {})), indent=1)
    rep.section("What was evaluated", _table(["", ""], rows) + f"<details><summary>config</summary><pre>"
                                                              f"{html.escape(cfg)}</pre></details>")


def _picture_path(report_dir: Path, data: dict, key: str) -> Path | None:
    for it in data.get("gallery", ()):
        if it.get("key") == key:
            return report_dir / it["file"]
    p = report_dir / "samples" / f"{key.replace(':', '_')}.png"
    return p if p.is_file() else None


def compare_reports(a: str | Path, b: str | Path, out_dir: str | Path, *, top: int = 6) -> Path:
    """`posekit report compare`: two reports side by side: metric and per-joint deltas (B - A), and
    the samples where their errors differ most, with both models' pictures where kept."""
    from posekit.viz.report import bars_png
    reports = []
    for p in (a, b):
        p = Path(p)
        path = p / "report.json" if p.is_dir() else p
        if not path.is_file():
            raise FileNotFoundError(f"report not found: {path} (give a report folder or its report.json)")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not a posekit report.json ({e})") from None
        if not isinstance(data, dict) or "metrics" not in data:
            raise ValueError(f"{path}: not a posekit report.json (no 'metrics'); write one with posekit eval --report DIR")
        reports.append((path.parent, data))
    (da, ra), (db, rb) = reports
    if os.path.abspath(out_dir) in (os.path.abspath(da), os.path.abspath(db)):
        raise ValueError(f"--out {out_dir}: is one of the compared reports; give another folder")
    out = _Out(out_dir)
    rep = _Report(out)
    common = [k for k in ra["metrics"] if k in rb["metrics"] and "/" not in k]
    rep.section("Metrics (B - A)", f"<p>A = {html.escape(str(da))}, B = {html.escape(str(db))}</p>" + _table(
        ["metric", "A", "B", "B - A"], [[k, ra["metrics"][k], rb["metrics"][k], rb["metrics"][k] - ra["metrics"][k]]
                                         for k in common]))
    pj_a, pj_b = ra.get("per_joint", {}), rb.get("per_joint", {})
    joints = [j for j in pj_a if j in pj_b]
    deltas = {}
    if joints:
        bases = sorted({m for j in joints for m in pj_a[j] if m in pj_b[j]})
        rows = []
        for j in joints:
            row = [j]
            for m in bases:
                va, vb = pj_a[j].get(m), pj_b[j].get(m)
                row += [va, vb, None if va is None or vb is None else vb - va]
                if va is not None and vb is not None:
                    deltas.setdefault(m, {})[j] = vb - va
            rows.append(row)
        body = _table(["joint", *[f"{m} {s}" for m in bases for s in ("A", "B", "B - A")]], rows)
        for m, d in deltas.items():
            body += rep.figure(f"delta_{m}.png", bars_png(list(d), {f"{m} B - A": list(d.values())}, ylabel=m,
                                                          title=f"per-joint {m}: B - A", horizontal_line=0.0),
                               f"per-joint {m} delta")
        rep.section("Per joint (B - A)", body)
    ea = {s["key"]: s["error"] for s in ra.get("samples", []) if s.get("error") is not None}
    eb = {s["key"]: s["error"] for s in rb.get("samples", []) if s.get("error") is not None}
    shared = [k for k in ea if k in eb]
    ranked = sorted(shared, key=lambda k: -abs(eb[k] - ea[k]))
    with_pics = [k for k in ranked if _picture_path(da, ra, k) and _picture_path(db, rb, k)][:top]
    body = f"<p>{len(shared)} samples in both reports; the {len(with_pics)} with pictures in both that differ most:</p>"
    items = []
    for k in with_pics:
        body += f"<h3>{html.escape(k)}: error A {ea[k]:.2f}, B {eb[k]:.2f}</h3><div class=gallery>"
        for tag, d, r in (("A", da, ra), ("B", db, rb)):
            name = f"disagree_{tag}_{k.replace(':', '_')}.png"
            body += rep.figure(name, _picture_path(d, r, k).read_bytes(), f"{tag}: {k}")
        body += "</div>"
        items.append({"key": k, "error_a": ea[k], "error_b": eb[k]})
    body += _table(["sample", "error A", "error B", "B - A"], [[k, ea[k], eb[k], eb[k] - ea[k]] for k in ranked[:20]])
    rep.section("Where the two disagree most", body)
    data = {"a": str(da), "b": str(db), "metric_deltas": {k: rb["metrics"][k] - ra["metrics"][k] for k in common},
            "per_joint_deltas": deltas, "disagree": items}
    out.write("compare.json", json.dumps(json_safe(data), indent=1, allow_nan=False))
    page = (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>posekit report compare</title>"
            f"<style>{_CSS}</style></head><body><h1>posekit report compare</h1>{''.join(rep.sections)}</body></html>")
    out.write("index.html", page)
    return out.root / "index.html"
