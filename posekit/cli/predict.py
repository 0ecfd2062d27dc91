"""`posekit predict` and `posekit export`: the inference verbs."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

PREDICT_EPILOG = """examples:
  posekit predict runs/dogs/best.pt dog.jpg more_dogs/ --out preds/
  posekit predict runs/mpii/best.pt photo.jpg --out preds/ --box 100,50,200,400 --box 320,40,180,420
  posekit predict runs/coco/best.pt images/ --out preds/ --boxes dets.json --box-thr 0.3
  posekit predict runs/coco/best.pt images/ --out preds/ --detector fasterrcnn
  posekit predict mpii.onnx clip.mp4 --out preds/                    # onnxruntime, no recipe
  posekit predict runs/mpii/best.pt photos/ --out preds/ --backend onnxruntime
  posekit predict runs/coco/openpose.pt clip.mp4 --out preds/ --track --smooth one_euro
  posekit predict runs/coco/best.pt --source 0 --out live/ --track --detector fasterrcnn --det-every 5
  posekit predict runs/coco/best.pt --source rtsp://cam.local/stream --out live/ --track

tracking (--track): each person keeps a track id across frames (OKS + box IoU, Hungarian matching;
a track lives through up to 30 missed frames; a person starts a track only with a person score of
0.3 or more, others get id -1); JSON lines gain "track_ids" (one per person) and the video colours
and labels people by track. --smooth one_euro filters each track's joints in pixels.
--source reads a video file, a folder of frames (natural order: 2 before 10; a bad frame is named,
skipped and counted), a webcam index or a stream URL, one frame at a time (constant memory).

outputs: <name>.png (overlay) and <name>.json per image, mirroring sub-folders of a folder input
(a name taken twice gets _2, _3, ... in input order); a video (alone or inside a folder) gives
<name>.mp4 (annotated; H.264 where the installed OpenCV can encode it) and <name>.jsonl (one JSON
object per frame). JSON is strict: a non-finite coordinate is null. An output never replaces an
input (same path, hard link or symlink): it gets the next free _2, _3, ... name instead.

boxes (top-down models): --box (repeatable) gives every image those boxes; --boxes reads COCO
detections [{image_id, bbox, score}] (an image matches by --images-json or by its numeric stem,
000000000785.jpg -> 785), a COCO annotation file, or {"file name": [[x, y, w, h, score], ...]};
--detector runs a torchvision person detector. Every box is checked (integer image ids, finite
x, y, w, h within 1e6 px with w, h > 0, a score in [0, 1]; NaN/Infinity are refused); of a file
with several categories only person (1) is kept, with a note, unless --box-category ID|all.
With --boxes or --detector, an image with no box above --box-thr gets an empty result (no
person; said once, counted in the summary), as MMPose does. Without any box option the whole
image is one person. Bottom-up models and lifters ignore boxes. A lifter (gmh_mdn) takes 2-D
pose JSON files instead of images (see also `posekit lift`).

exit status: 0 when every input was predicted; 1 when some inputs could not be read (each is
reported in one line and the rest are still written) or when --boxes/--detector gave no input a
box; 2 for usage, file or model errors (a --boxes file none of whose image ids matches an input)."""

EXPORT_EPILOG = """examples:
  posekit export runs/mpii/best.pt --format onnx --out mpii.onnx
  posekit predict mpii.onnx photo.jpg --out preds/      # the file carries its own metadata

The .onnx file's metadata_props hold the config, skeleton, input size, normalisation, crop rule
and output names (see docs/deploy.md for running it with onnxruntime alone)."""


class InputGuard:
    """Every file the run reads, by resolved path and by (device, inode): an output path that
    lands on one (the same path, a hard link, or a symlink to it) would destroy an input, so it
    is never written (`--out .` beside the photos must not overwrite them)."""

    def __init__(self, paths=()):
        self.real: set[str] = set()
        self.ids: set[tuple[int, int]] = set()
        for path in paths:
            self.add(path)

    def add(self, path) -> None:
        self.real.add(os.path.realpath(path))
        try:
            st = os.stat(path)
        except OSError:
            return
        self.ids.add((st.st_dev, st.st_ino))

    def hits(self, path) -> bool:
        if os.path.realpath(path) in self.real:
            return True
        try:
            st = os.stat(path)  # follows a symlink: a link to an input is that input
        except OSError:
            return False
        return (st.st_dev, st.st_ino) in self.ids


class OutputNames:
    """Output stems that never collide: a stem taken before, or one whose files would replace an
    input (see InputGuard), gets _2, _3, ... (in input order, so the same inputs always give the
    same names)."""

    def __init__(self, out: Path | None = None, guard: InputGuard | None = None):
        self.used: set[str] = set()
        self.out, self.guard = out, guard
        self.renamed: list[str] = []

    def _replaces_input(self, candidate: str, suffixes) -> bool:
        return self.guard is not None and self.out is not None and \
            any(self.guard.hits(self.out / f"{candidate}{s}") for s in suffixes)

    def claim(self, stem: str, suffixes=()) -> str:
        candidate, n = stem, 1
        while candidate.lower() in self.used or self._replaces_input(candidate, suffixes):
            n += 1
            candidate = f"{stem}_{n}"
        if candidate != stem and self._replaces_input(stem, suffixes):
            if not self.renamed:
                print(f"posekit predict: note: an output named {stem} in {self.out} would replace an input; "
                      f"writing {candidate} instead (later ones are counted in the summary)", file=sys.stderr)
            self.renamed.append(stem)
        self.used.add(candidate.lower())
        return candidate


def input_files(sources: list[Path]) -> list[Path]:
    """The files a run reads from its sources: files as given, folders' images and videos."""
    from posekit.data.io import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
    out = []
    for s in sources:
        if s.is_dir():
            out += sorted(p for p in s.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS
                          + (".json",) and p.is_file())
        else:
            out.append(s)
    return out


def check_out_folder(out: Path) -> None:
    """--out names a folder: an existing file, or a new name with an image/video/JSON suffix
    (`--out result.png`), is refused rather than turned into a folder of that name."""
    from posekit.data.io import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file; --out is a folder for the outputs (e.g. --out preds/)")
    if not out.exists() and out.suffix.lower() in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS + (".json", ".jsonl"):
        raise ValueError(f"--out {out} looks like a file name; --out is a folder: outputs are named after "
                         f"their inputs inside it (e.g. --out {out.parent / out.stem}/)")


class BoxProvider:
    """Per image, what to give the predictor as its boxes (None = the whole image)."""

    def __init__(self, args, predictor):
        chosen = [flag for flag, on in (("--box", args.box), ("--boxes", args.boxes), ("--detector", args.detector))
                  if on]
        if len(chosen) > 1:
            raise ValueError(f"give one of --box, --boxes, --detector (got {', '.join(chosen)})")
        from posekit.data.box_files import load_box_file, parse_box  # numpy only: the .onnx path has them too
        self.fixed = [(b + [1.0])[:5] for b in (parse_box(t) for t in args.box or [])]  # x, y, w, h, score
        self.fixed_text = list(args.box or [])
        self.threshold = float(args.box_thr)
        self.max_boxes = args.max_boxes
        self.file = self.detector = None
        self.missing: list[str] = []
        self.asked = 0  # inputs given boxes by --boxes or --detector
        self.active = bool(chosen)
        if self.active and not predictor.takes_boxes:
            what = "takes 2-D poses" if not predictor.takes_images else "finds every person itself"
            print(f"posekit predict: note: this {predictor.task.name} model {what}: {chosen[0]} is ignored",
                  file=sys.stderr)
            self.active = False
            return
        if args.boxes:
            self.file = load_box_file(args.boxes, images_json=args.images_json, category_id=args.box_category)
            for note in self.file.notes:
                print(f"posekit predict: note: {note}", file=sys.stderr)
            self._check_ids_match(args, getattr(args, "image_inputs", []))
        if args.detector:
            from posekit.engine.detector import PersonDetector  # torchvision
            self.detector = PersonDetector(args.detector, weights=None if args.detector_weights.lower() == "none"
                                           else args.detector_weights, score_threshold=self.threshold,
                                           device=args.device)

    def _check_ids_match(self, args, image_inputs: list[tuple[str, str | None]]) -> None:
        """COCO detections name images by id: when the file has boxes and not one image input
        matches any of them, say so (and how images are matched) before predicting nothing."""
        if not image_inputs or not len(self.file):
            return
        if any(self.file.lookup(name, rel) is not None for name, rel in image_inputs):
            return
        ids = sorted(self.file.by_id)
        if ids:
            hint = "pass --images-json COCO.json (its 'images' give id and file_name)" if not args.images_json \
                else f"check that {args.images_json} lists these files"
            raise ValueError(f"--boxes {args.boxes}: no image_id matched any of the {len(image_inputs)} input "
                             f"image(s) (ids {', '.join(map(str, ids[:3]))}{', ...' if len(ids) > 3 else ''}; an "
                             f"image matches by --images-json or by a numeric stem such as 000000000785.jpg): "
                             f"{hint}")
        names = sorted(self.file.by_name)
        raise ValueError(f"--boxes {args.boxes}: no entry matches any of the {len(image_inputs)} input image(s) "
                         f"(entries such as {', '.join(map(repr, names[:3]))}; an entry matches a file's path, "
                         "name or stem)")

    def _check_inside(self, names: list[str], images: list) -> None:
        for name, image in zip(names, images):
            h, w = image.shape[:2]
            for text, (x, y, bw, bh, _) in zip(self.fixed_text, self.fixed):
                if x >= w or y >= h or x + bw <= 0 or y + bh <= 0:
                    raise ValueError(f"--box {text} lies wholly outside {name} ({w}x{h} pixels): boxes are "
                                     "x,y,w,h in pixels of the image")

    def for_batch(self, names: list[str], relatives: list[str | None], images: list) -> list | None:
        if not self.active:
            return None
        if self.fixed:  # one --box keeps the single-person result of before; several give N persons
            self._check_inside(names, images)
            return [self.fixed[0][:4] if len(self.fixed) == 1 else self.fixed for _ in images]
        import numpy as np

        from posekit.data.box_files import keep_boxes
        self.asked += len(names)
        if self.file is not None:
            rows = [keep_boxes(self.file.lookup(n, r), self.threshold) for n, r in zip(names, relatives)]
        else:
            rows = self.detector(images)
        out = []
        for name, r in zip(names, rows):
            if r is not None and self.max_boxes:
                r = r[np.argsort(-r[:, 4], kind="stable")][:self.max_boxes]
            if r is None or not len(r):
                self._no_box(name)
                out.append([])
            else:
                out.append(r)
        return out

    def _no_box(self, name: str) -> None:
        if not self.missing:
            print(f"posekit predict: no box above --box-thr {self.threshold:g} for {name}: it gets an empty result "
                  "(no person); later ones are counted in the summary", file=sys.stderr)
        self.missing.append(name)


def _make_folders(folder: Path) -> list[Path]:
    """mkdir -p `folder`; returns the folders this call created (deepest last), so that a run
    that writes nothing there can remove exactly those and nothing else."""
    missing = []
    for f in (folder, *folder.parents):
        if f.exists():
            break
        missing.append(f)
    folder.mkdir(parents=True, exist_ok=True)
    return missing[::-1]


def _partial_beside(path: Path) -> Path:
    """A new hidden file in `path`'s folder (made now, so it is this run's own), to be renamed
    onto `path` when complete."""
    import tempfile
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent)
    os.close(fd)
    return Path(name)


def _remove_created(paths: list[Path]) -> None:
    """Remove what this run created (files, then its folders if they stayed empty), newest
    first; never anything else."""
    for p in reversed(paths):
        try:
            p.rmdir() if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
        except OSError:
            pass  # a folder something else wrote into meanwhile stays


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, allow_nan=False))


class Run:
    """One `posekit predict` call: inputs in, files out, failures counted."""

    def __init__(self, args, predictor, boxes: BoxProvider, out: Path):
        self.args, self.predictor, self.boxes, self.out = args, predictor, boxes, out
        self.names = OutputNames(out, InputGuard(getattr(args, "input_paths", ())))
        self.written, self.failed = 0, []
        self.draw_3d: bool | None = None  # a lifter's 3-D figures need matplotlib (not in a deploy install)
        self.batch_size = args.batch_size or predictor.cfg.eval.batch_size
        self.pending: list[tuple[str, str | None, object, str]] = []
        person_thr = args.person_thr
        if person_thr is None and (args.boxes or args.detector):
            person_thr = args.box_thr  # a person under the box threshold is never drawn as confident
        self.plot_options = {"score_threshold": args.kpt_thr, "person_threshold": person_thr}

    def fail(self, name: str, message: str) -> None:
        message = message if name in message else f"{name}: {message}"
        print(f"posekit predict: skipped: {message}", file=sys.stderr)
        self.failed.append(name)

    # --- images --------------------------------------------------------------------------------
    def add_image(self, name: str, relative: str | None, image, stem: str) -> None:
        self.pending.append((name, relative, image, self.names.claim(stem, (".png", ".json"))))
        if len(self.pending) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        names, relatives, images, stems = (list(v) for v in zip(*self.pending))
        self.pending = []
        boxes = self.boxes.for_batch(names, relatives, images)
        results = self.predictor(images, boxes=boxes, paths=names, batch_size=self.batch_size)
        for res, stem in zip(results, stems):
            res.save(self.out / f"{stem}.png", **self.plot_options)
            _write_json(self.out / f"{stem}.json", self._json(res))
            self.written += 1

    def _json(self, res, **extra) -> dict:
        from posekit.results import results_json  # one form for the PyTorch and the torch-free path
        return results_json(res, **extra)

    def images(self, source: Path) -> None:
        """An image file, or a folder: its images (with a progress bar) and its videos, outputs
        mirroring its sub-folders."""
        from posekit.data import io
        if not source.is_dir():
            for name, image in io.iter_sources([source], on_error=self.fail):
                self.add_image(name, None, image, Path(name).stem)
            return
        from tqdm import tqdm
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in io.IMAGE_EXTENSIONS + io.VIDEO_EXTENSIONS)
        pictures = [f for f in files if f.suffix.lower() in io.IMAGE_EXTENSIONS]
        videos = [f for f in files if f.suffix.lower() in io.VIDEO_EXTENSIONS]
        if not files:
            raise FileNotFoundError(f"no images or videos in folder {source}")
        bar = tqdm(total=len(pictures), desc=source.name or str(source), unit="image", file=sys.stderr,
                   disable=not self.args.progress or not pictures, leave=False)

        def failed(name, message):
            bar.update(1)
            self.fail(name, message)

        for name, image in io.iter_sources(pictures, on_error=failed) if pictures else ():
            rel = Path(name).relative_to(source)
            self.add_image(name, rel.as_posix(), image, rel.with_suffix("").as_posix())
            bar.update(1)
        self.flush()
        bar.close()
        for f in videos:
            self.video(f, f.relative_to(source).with_suffix("").as_posix())

    # --- video ---------------------------------------------------------------------------------
    def video(self, source: Path, stem: str | None = None, reader=None) -> None:
        from tqdm import tqdm

        from posekit.data.video import VideoReader, VideoWriter
        self.flush()
        try:
            reader = reader if reader is not None else VideoReader(source)
        except ValueError as e:
            self.fail(str(source), str(e))
            return
        stem = self.names.claim(stem or source.stem, (".mp4", ".jsonl"))
        mp4, jsonl = self.out / f"{stem}.mp4", self.out / f"{stem}.jsonl"
        made = _make_folders(mp4.parent)
        frames = 0
        bar = tqdm(total=reader.frame_count or None, desc=source.name, unit="frame", disable=not self.args.progress,
                   file=sys.stderr, leave=False)
        partial = _partial_beside(jsonl)  # both outputs appear under their names only once frames were written
        made.append(partial)
        try:
            frames = self._video_frames(source, reader, VideoWriter(mp4, fps=reader.fps), partial, bar)
            if frames:
                os.replace(partial, jsonl)
                made.remove(partial)
        finally:
            bar.close()
            if not frames:
                _remove_created(made)
        if frames == 0:
            self.fail(str(source), "the video opens but no frame could be decoded (empty, truncated, or a codec "
                      "OpenCV lacks): nothing was written for it")
            return
        self.written += 1
        skipped = getattr(reader, "skipped", [])
        if skipped:  # a folder of frames: each bad frame named, then counted
            for name, message in skipped:
                self.fail(name, f"frame skipped: {message}")
            print(f"posekit predict: {source}: {len(skipped)} frame(s) could not be read and were skipped",
                  file=sys.stderr)
        elif reader.frame_count and frames < reader.frame_count:
            print(f"posekit predict: note: {source}: the video ended after {frames} of the {reader.frame_count} "
                  "frames its header claims (cut or truncated); the frames before the cut were written",
                  file=sys.stderr)
        print(f"{source}: {frames} frame(s) -> {mp4} and {stem}.jsonl")

    def _video_frames(self, source: Path, reader, writer, partial: Path, bar) -> int:
        """Predict every frame into `writer` (the .mp4, moved into place when it closes with a
        frame) and `partial` (the .jsonl lines); returns the number of frames."""
        if getattr(self.args, "track", False):
            return self._tracked_frames(source, reader, writer, partial, bar)
        frames = 0
        with writer, partial.open("w") as lines:
            chunk: list = []

            def run_chunk():
                nonlocal frames
                names = [f"{source}#{frames + i:06d}" for i in range(len(chunk))]
                boxes = self.boxes.for_batch(names, [None] * len(chunk), chunk)
                for i, res in enumerate(self.predictor(chunk, boxes=boxes, paths=names, batch_size=self.batch_size)):
                    writer.write(res.plot(**self.plot_options))
                    index = frames + i
                    lines.write(json.dumps(self._json(res, frame=index, time_s=round(index / reader.fps, 6)),
                                           allow_nan=False) + "\n")
                frames += len(chunk)
                bar.update(len(chunk))
                chunk.clear()

            for frame in reader:
                chunk.append(frame)
                if len(chunk) >= self.batch_size:
                    run_chunk()
            if chunk:
                run_chunk()
        return frames

    def _tracked_frames(self, source, reader, writer, partial: Path, bar) -> int:
        """--track: `Predictor.track` over the frames as they are decoded (constant memory); each
        JSON line gains `track_ids`, the video colours and labels people by track."""
        args, frames = self.args, 0
        boxes = None
        if self.boxes.active:
            def boxes(index, image):
                return self.boxes.for_batch([f"{source}#{index:06d}"], [None], [image])[0]
        smooth = ({"min_cutoff": args.smooth_min_cutoff, "beta": args.smooth_beta} if args.smooth == "one_euro"
                  else None)
        with writer, partial.open("w") as lines:
            for index, res in enumerate(self.predictor.track(iter(reader), boxes=boxes, det_every=args.det_every,
                                                             fps=reader.fps, smooth=smooth,
                                                             batch_size=self.batch_size)):
                res.path = f"{source}#{index:06d}"
                writer.write(res.plot(**self.plot_options))
                lines.write(json.dumps(self._json(res, frame=index, time_s=round(index / reader.fps, 6)),
                                       allow_nan=False) + "\n")
                frames += 1
                bar.update(1)
        return frames

    # --- 2-D poses for a lifter ----------------------------------------------------------------
    def poses(self, source: Path) -> None:
        from posekit.data.formats.pose_json import read_pose_json
        files = sorted(source.rglob("*.json")) if source.is_dir() else [source]
        for f in files:
            try:
                records = read_pose_json(f)
            except (OSError, ValueError) as e:
                self.fail(str(f), str(e))
                continue
            for rec in records:
                skeleton = rec["skeleton"] or self.args.skeleton
                if skeleton is None:
                    from posekit.skeletons.mappings import lift_layouts  # torch-free (data.lifting imports torch)
                    raise ValueError(f"{f}: record {rec['name']!r} does not name its joint layout, and a bare list "
                                     f"is never guessed: give --skeleton NAME ({', '.join(lift_layouts())}) or a "
                                     "'skeleton' key")
                res = self.predictor([rec["keypoints"]], skeleton=skeleton)[0]
                res.path = str(f)
                stem = self.names.claim(rec["name"].replace(" ", "_"), (".png", ".json"))
                if self.draw_3d is None:
                    from posekit.cli.lift import can_draw_3d
                    self.draw_3d = can_draw_3d()
                    if not self.draw_3d:
                        print("posekit predict: note: matplotlib is not installed, so the 3-D figures (.png) are not "
                              "drawn; the JSON is written (pip install matplotlib for the figures)", file=sys.stderr)
                if self.draw_3d:
                    res.save(self.out / f"{stem}.png", **self.plot_options)
                _write_json(self.out / f"{stem}.json", self._json(res))
                self.written += 1


def cmd_predict(args) -> int:
    from posekit.data.io import VIDEO_EXTENSIONS
    if not os.path.exists(args.checkpoint):  # an existing file (an .onnx one: no torch import) is taken as is
        from posekit.engine.weights import resolve_checkpoint
        args.checkpoint = str(resolve_checkpoint(args.checkpoint))  # a weights name: fetched, verified, converted
    ckpt = Path(args.checkpoint)
    if not ckpt.exists():
        raise FileNotFoundError(f"{'ONNX file' if ckpt.suffix.lower() == '.onnx' else 'checkpoint'} not found: {ckpt}")
    sources = [Path(s) for s in args.sources]
    for s in sources:
        if not s.exists():
            raise FileNotFoundError(f"input not found: {s}")
    if not sources and not args.source:
        raise ValueError("give inputs (images, folders, videos) or --source (a video, a folder of frames, a webcam "
                         "index or a stream URL)")
    if args.det_every < 1:
        raise ValueError(f"--det-every must be at least 1, got {args.det_every}")
    if args.det_every > 1 and not args.track:
        raise ValueError("--det-every needs --track (boxes between detector frames come from the tracked poses)")
    if args.smooth and not args.track:
        raise ValueError(f"--smooth {args.smooth} needs --track (it filters each track's joints over time)")
    from posekit.ops.one_euro import OneEuroFilter
    OneEuroFilter(args.smooth_min_cutoff, args.smooth_beta)  # bad parameters: one line, before the model loads
    video_sources = [_open_source(spec) for spec in args.source or []]
    if args.box:
        from posekit.data.box_files import parse_box
        for b in args.box:
            parse_box(b)  # a bad --box is an error before the model loads
    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.max_boxes is not None and args.max_boxes < 1:
        raise ValueError(f"--max-boxes must be at least 1, got {args.max_boxes}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    for name in ("kpt_thr", "person_thr"):
        value = getattr(args, name)
        if value is not None and not 0 <= value <= 1:
            raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1], got {value}")
    if not 0 <= args.box_thr <= 1:
        raise ValueError(f"--box-thr must be in [0, 1], got {args.box_thr}")
    out = Path(args.out)
    check_out_folder(out)
    files = input_files(sources)
    files += input_files([Path(t) for t in args.source or [] if Path(t).exists()])  # --source files are inputs too
    args.input_paths = [*files, ckpt, *(Path(p) for p in (args.boxes, args.images_json, args.detector_weights)
                                        if p and Path(p).is_file())]
    args.image_inputs = _image_inputs(sources)
    from posekit.cli.runtime_predict import runtime_predictor_for
    predictor = runtime_predictor_for(args)  # an .onnx file the numpy runtime runs: torch is never imported
    if predictor is None:
        from posekit.engine.predictor import Predictor
        predictor = Predictor(args.checkpoint, device=args.device, overrides=args.overrides, backend=args.backend,
                              threads=args.threads)
    if args.overrides and predictor.metadata is not None and Path(args.checkpoint).suffix.lower() == ".onnx":
        print("posekit predict: note: --set on an .onnx file changes pre/post-processing only; the graph (flip "
              "test, scales, decoding) was fixed at export", file=sys.stderr)
    boxes = BoxProvider(args, predictor)
    out.mkdir(parents=True, exist_ok=True)
    run = Run(args, predictor, boxes, out)
    if video_sources and not predictor.takes_images:
        raise ValueError(f"--source gives video frames; this {predictor.task.name} model takes 2-D pose JSON files")
    for (spec, stem), reader in video_sources:
        run.video(Path(str(spec)), stem, reader=reader)
    for source in sources:
        if not predictor.takes_images:
            run.poses(source)
        elif source.is_file() and source.suffix.lower() in VIDEO_EXTENSIONS:
            run.video(source)
        else:
            run.images(source)
    run.flush()
    summary = f"{run.written} prediction(s) written to {out} ({predictor.backend})"
    if boxes.missing:
        summary += f"; {len(boxes.missing)} input(s) had no box and got an empty result"
    if run.failed:
        summary += f"; {len(run.failed)} input(s) could not be read and were skipped"
    if run.names.renamed:
        summary += f"; {len(run.names.renamed)} output(s) renamed so as not to replace an input"
    print(summary)
    if boxes.asked and len(boxes.missing) == boxes.asked:
        print(f"posekit predict: no input got a box (--box-thr {boxes.threshold:g}): every result is empty",
              file=sys.stderr)
        return 1
    return 1 if run.failed else 0


def _open_source(spec: str):
    """--source SPEC -> ((spec, output stem), an opened frame reader); one line when it cannot open."""
    import re

    from posekit.data.video import open_source
    text = spec.strip()
    if text.isdigit():
        stem = f"camera{int(text)}"
    elif "://" in text:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", text.split("://", 1)[1]).strip("_")[:80] or "stream"
    else:
        path = Path(text)
        if not path.exists():
            raise FileNotFoundError(f"--source {text}: not found (a video file, a folder of frames, a webcam index "
                                    "such as 0, or a stream URL such as rtsp://host/path)")
        stem = path.stem if path.is_file() else path.name
    return (text, stem), open_source(text)


def _image_inputs(sources: list[Path]) -> list[tuple[str, str | None]]:
    """(name, path inside its folder) of every image input, as the box lookup sees them."""
    from posekit.data.io import IMAGE_EXTENSIONS
    out: list[tuple[str, str | None]] = []
    for s in sources:
        if s.is_dir():
            out += [(str(p), p.relative_to(s).as_posix()) for p in sorted(s.rglob("*"))
                    if p.suffix.lower() in IMAGE_EXTENSIONS]
        elif s.suffix.lower() in IMAGE_EXTENSIONS:
            out.append((str(s), None))
    return out


def cmd_export(args) -> int:
    from posekit.engine.export import export_task
    from posekit.engine.predictor import load_for_inference
    if args.format not in ("onnx", "pt"):
        raise ValueError(f"unsupported --format {args.format!r}; supported: onnx, pt")
    from posekit.engine.weights import resolve_checkpoint
    checkpoint = resolve_checkpoint(args.checkpoint)  # a weights name: its cached checkpoint
    if getattr(args, "int8", False) and args.format != "onnx":
        raise ValueError("--int8 quantizes an ONNX export: use it with --format onnx")
    if args.format == "pt":  # weights only (EMA when kept), config and metadata: what predict needs
        from posekit.engine.checkpoint import export_weights
        default = Path(checkpoint).with_name(f"{Path(checkpoint).stem}.weights.pt") if checkpoint == args.checkpoint \
            else Path(f"{args.checkpoint}.weights.pt")
        report = export_weights(checkpoint, Path(args.out) if args.out else default)
        print(f"exported {report['path']} (weights only: {report['tensors']} tensors, {report['mb']:.1f} MB; "
              f"{checkpoint} is {report['source_mb']:.1f} MB)")
        return 0
    int8 = getattr(args, "int8", False)
    task, model, cfg = load_for_inference(checkpoint, getattr(args, "overrides", None) or None, device="cpu")
    suffix = ".int8.onnx" if int8 else ".onnx"
    default = Path(args.checkpoint).with_suffix(suffix) if checkpoint == args.checkpoint \
        else Path(f"{args.checkpoint}{suffix}")  # a weights name: NAME.onnx here, not inside the cache
    path = Path(args.out) if args.out else default
    if int8:
        from posekit.engine.quantize import export_int8
        datasets = task.build_datasets(tuple(task.eval_splits))
        report = export_int8(task, model, path, datasets, calib=args.calib, max_drop=args.max_drop)
        arrow = "higher is better" if report["higher_is_better"] else "lower is better"
        print(f"exported {report['path']} (int8, calibrated on {report['calibration_images']} {report['split']!r} "
              f"images); {report['metric']} fp32 {report['fp32']:.4g} -> int8 {report['int8']:.4g} ({arrow}; "
              f"{report['drop']:.1%} worse, allowed {report['max_drop']:.1%})")
        return 0
    report = export_task(task, model, path)
    print(f"exported {report['path']} (outputs: {', '.join(report['outputs'])}; {len(report['metadata'])} metadata "
          f"entries); onnxruntime parity: max abs difference {report['max_abs_diff']:.3g}")
    return 0


def _box_category(text: str) -> int | str:
    """--box-category: an integer category id or `all`."""
    if text.strip().lower() == "all":
        return "all"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer COCO category id or 'all', got {text!r}") from None


def add_parsers(add) -> None:
    """Register the verbs on the main parser (`add(name, help, fn)` returns a subparser)."""
    p = add("predict", "run a checkpoint or an exported .onnx file on images, folders or videos", cmd_predict)
    p.epilog = PREDICT_EPILOG
    p.add_argument("checkpoint", help="a posekit checkpoint (.pt), an exported .onnx file or a weights name "
                   "(posekit weights list)")
    p.add_argument("sources", nargs="*", help="image files, folders of images, video files (2-D pose JSON files "
                   "for a lifter)")
    p.add_argument("--source", action="append", metavar="SPEC", help="a video source, read frame by frame: a video "
                   "file, a folder of frames (natural order, 25 fps), a webcam index (0) or a stream URL "
                   "(rtsp://..., http://...); repeatable")
    p.add_argument("--track", action="store_true", help="videos: give each person a track id that stays with them "
                   "(JSON lines gain track_ids; the video colours and labels people by track)")
    p.add_argument("--det-every", type=int, default=1, metavar="N", help="with --track and --detector: run the "
                   "detector every N frames, boxes in between from the previous frame's keypoints (default 1)")
    p.add_argument("--smooth", choices=["one_euro"], help="with --track: One-Euro filter per track and joint, in "
                   "pixels (default: off)")
    p.add_argument("--smooth-min-cutoff", type=float, default=0.5, metavar="HZ", help="One-Euro cutoff at rest: "
                   "lower is smoother and lags more (default 0.5)")
    p.add_argument("--smooth-beta", type=float, default=0.04, help="One-Euro speed coefficient (per px/s): higher "
                   "follows fast motion with less lag (default 0.04)")
    p.add_argument("--out", required=True, help="folder for overlays and JSON results")
    p.add_argument("--box", action="append", metavar="X,Y,W,H", help="a person box for top-down models; repeat for "
                   "several people (default: the whole image)")
    p.add_argument("--boxes", metavar="JSON", help="boxes per image: COCO detections, a COCO annotation file or "
                   "{file name: [[x, y, w, h, score], ...]}")
    p.add_argument("--images-json", metavar="JSON", help="a COCO file whose 'images' map --boxes image ids to files")
    p.add_argument("--box-category", type=_box_category, metavar="ID|all", help="keep only --boxes of this COCO "
                   "category id, or all of them (default: every box of a one-category file; of several, COCO's "
                   "person, 1, with a note)")
    p.add_argument("--kpt-thr", type=float, default=0.0, help="pictures: joints scored at or below this are not "
                   "drawn (default 0: all)")
    p.add_argument("--person-thr", type=float, default=None, help="pictures: a person scored under this is drawn "
                   "greyed and thin, not as confident (default: --box-thr when boxes are used, else off)")
    p.add_argument("--box-thr", type=float, default=0.3, help="minimum box score for --boxes and --detector "
                   "(default 0.3)")
    p.add_argument("--max-boxes", type=int, metavar="N", help="keep the N best-scoring boxes per image of --boxes "
                   "and --detector (default: all above --box-thr)")
    p.add_argument("--detector", choices=["fasterrcnn", "fasterrcnn_v2", "fasterrcnn_mobilenet",
                                          "fasterrcnn_mobilenet_320"],
                   help="find person boxes with a torchvision Faster R-CNN")
    p.add_argument("--detector-weights", default="DEFAULT", help="torchvision weights name (DEFAULT: COCO, fetched "
                   "by torchvision), a local state-dict file, or none (random: testing only)")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnxruntime"],
                   help="auto: .onnx files run with onnxruntime, checkpoints with PyTorch; onnxruntime on a "
                   "checkpoint exports it once (cached in ~/.cache/posekit/onnx, keyed by the checkpoint's content)")
    p.add_argument("--batch-size", type=int, help="images per forward pass (default: the checkpoint's eval.batch_size)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="intra-op threads of torch and onnxruntime (default: the physical cores)")
    from posekit.skeletons.mappings import lift_layouts  # torch-free: building the parser imports no torch
    p.add_argument("--skeleton", default=None, choices=lift_layouts(),
                   help="lifters: joint order of pose JSON files that do not name their skeleton (required then: "
                   "a bare list of joints is never guessed)")
    p.add_argument("--progress", default=True, action=argparse.BooleanOptionalAction,
                   help="progress bars for videos and image folders (on stderr)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value stored in the checkpoint (e.g. eval.flip_test=false)")

    p = add("export", "export a checkpoint with decoding inside the graph", cmd_export)
    p.epilog = EXPORT_EPILOG
    p.add_argument("checkpoint")
    p.add_argument("--format", default="onnx", choices=["onnx", "pt"],
                   help="onnx: the decode graph for onnxruntime; pt: a weights-only checkpoint for predict/eval")
    p.add_argument("--out", help="output path (default: next to the checkpoint)")
    p.add_argument("--int8", action="store_true",
                   help="onnx: int8 static quantization for CPU, calibrated on the recipe's validation split; "
                   "written only if its metric is within --max-drop of fp32 (default out: NAME.int8.onnx)")
    p.add_argument("--calib", type=int, default=64, metavar="N",
                   help="--int8: validation images used to calibrate the activation ranges (default 64)")
    p.add_argument("--max-drop", type=float, default=0.02, metavar="F",
                   help="--int8: refuse when the metric gets worse by more than F of its fp32 value "
                   "(default 0.02 = 2%%)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a stored config value (e.g. data.root=/data/coco: where --int8 finds the "
                   "validation split on this machine)")
