"""Published weights: download (progress, resume, sha256/size checks, no network), conversion and the
`<model>.<tag>` names every verb takes. Files are served by a local HTTP server on 127.0.0.1 that the
tests start; nothing leaves the machine."""
from __future__ import annotations

import hashlib
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

from posekit.cli import main
from posekit.engine import weights as engine_weights
from posekit.engine.weights import (WeightsDownloadError, WeightsMismatchError, download, ensure_checkpoint,
                                    partial_path, resolve_checkpoint)
from posekit.models import weights as registry
from posekit.models.openpose import cmu_layer_names, convert_cmu_state_dict, openpose_vgg19
from posekit.models.weights import WeightsEntry, cache_dir, converted_path, download_path, get_weights


# --- a local file server ---------------------------------------------------------------------------------
class FileServer:
    """Serves `files` {name: bytes} with HTTP Range support. `cut_after` closes the first response
    after that many body bytes (a broken connection); `drip` sleeps between 4 KiB chunks; every
    request's Range header is recorded."""

    def __init__(self, files: dict[str, bytes], *, cut_after: int | None = None, drip: float = 0.0,
                 claim_length: int | None = None, honour_range: bool = True):
        self.files, self.cut_after, self.drip, self.claim_length = files, cut_after, drip, claim_length
        self.honour_range = honour_range
        self.ranges: list[str | None] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                data = server.files.get(self.path.lstrip("/"))
                if data is None:
                    self.send_error(404)
                    return
                rng = self.headers.get("Range")
                server.ranges.append(rng)
                rng = rng if server.honour_range else None
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                if start >= len(data) and rng:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.end_headers()
                    return
                body = data[start:]
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(server.claim_length or len(body)))
                self.end_headers()
                limit = len(body)
                if server.cut_after is not None and len(server.ranges) == 1:
                    limit = server.cut_after
                for i in range(0, limit, 4096):
                    try:
                        self.wfile.write(body[i:min(i + 4096, limit)])
                        self.wfile.flush()
                    except (BrokenPipeError, ConnectionResetError):
                        return
                    if server.drip:
                        time.sleep(server.drip)
                if limit < len(body):
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def free_port() -> int:
    """A port nothing listens on (connection refused), as on a machine without network."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("POSEKIT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def blob(n=300_000, seed=0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def entry_for(data: bytes, urls, *, name="openpose_vgg19.test", sha=True, size=True, **kw) -> WeightsEntry:
    defaults = dict(model="openpose_vgg19", task="test", filename=f"{name}.pth", converter="cmu-openpose",
                    preprocessing="BGR", skeleton="openpose18", licence="test", metric="none",
                    recipe="coco_openpose", source="test")
    defaults.update(kw)
    return WeightsEntry(name=name, urls=tuple(urls), sha256=hashlib.sha256(data).hexdigest() if sha else None,
                        size=len(data) if size else None, **defaults)


# --- download ----------------------------------------------------------------------------------------------
def test_download_verifies_and_moves_the_file_into_the_cache_with_progress(home, capsys):
    data = blob()
    with FileServer({"w.pth": data}) as srv:
        entry = entry_for(data, [srv.url("w.pth")])
        path = download(entry, progress=True)
    assert path == home / "weights" / entry.filename and path.read_bytes() == data
    assert not partial_path(entry).exists()
    err = capsys.readouterr().err
    assert entry.filename in err and "100%" in err  # the tqdm bar reached the end
    with FileServer({}) as srv:  # cached: no request at all (the server has nothing to give)
        assert download(entry_for(data, [srv.url("w.pth")]), progress=False) == path


def test_cut_connection_resumes_with_a_range_request(home):
    data = blob(500_000)
    with FileServer({"w.pth": data}, cut_after=123_000) as srv:
        path = download(entry_for(data, [srv.url("w.pth")]), progress=False)
        assert srv.ranges[0] is None and srv.ranges[1] == "bytes=123000-"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()


def test_an_existing_partial_file_is_resumed_not_restarted(home):
    data = blob()
    with FileServer({"w.pth": data}) as srv:
        entry = entry_for(data, [srv.url("w.pth")])
        partial = partial_path(entry)
        partial.parent.mkdir(parents=True)
        partial.write_bytes(data[:70_000])
        assert download(entry, progress=False).read_bytes() == data
        assert srv.ranges == ["bytes=70000-"]


def test_a_server_without_range_support_restarts_the_file_cleanly(home):
    data = blob()
    with FileServer({"w.pth": data}, honour_range=False) as srv:
        entry = entry_for(data, [srv.url("w.pth")])
        partial_path(entry).parent.mkdir(parents=True)
        partial_path(entry).write_bytes(data[:50_000])
        assert download(entry, progress=False).read_bytes() == data  # not the old 50 kB + the whole file


def test_sha_mismatch_is_refused_and_nothing_is_kept(home):
    data, other = blob(seed=0), blob(seed=1)
    with FileServer({"w.pth": other}) as srv:
        entry = entry_for(data, [srv.url("w.pth")])
        with pytest.raises(WeightsDownloadError) as err:
            download(entry, progress=False)
    msg = str(err.value)
    assert f"sha256 {hashlib.sha256(other).hexdigest()}, expected {hashlib.sha256(data).hexdigest()}" in msg
    assert "\n" not in msg and str(download_path(entry)) in msg
    assert not download_path(entry).exists() and not partial_path(entry).exists()


def test_size_mismatch_is_refused_before_the_body_is_read(home):
    data = blob()
    with FileServer({"w.pth": data + b"extra"}) as srv:
        entry = entry_for(data, [srv.url("w.pth")], sha=False)
        with pytest.raises(WeightsDownloadError, match=f"serves {len(data) + 5:,} bytes, expected {len(data):,}"):
            download(entry, progress=False)
    assert not download_path(entry).exists()


def test_a_wrong_file_already_in_the_cache_is_refused_not_replaced(home):
    data = blob()
    entry = entry_for(data, ["http://127.0.0.1:9/never"])
    target = download_path(entry)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not the weights")
    with pytest.raises(WeightsMismatchError, match="size 15 bytes, expected"):
        download(entry, progress=False)
    assert target.read_bytes() == b"not the weights"  # the user's file stays


def test_no_network_names_url_check_and_exact_path_in_one_line(home):
    data = blob()
    port = free_port()
    entry = entry_for(data, [f"http://127.0.0.1:{port}/w.pth", f"http://127.0.0.1:{port}/mirror/w.pth"])
    with pytest.raises(WeightsDownloadError) as err:
        download(entry, progress=False)
    msg = str(err.value)
    assert "\n" not in msg and entry.urls[0] in msg and entry.urls[1] in msg and "refused" in msg.lower()
    assert hashlib.sha256(data).hexdigest() in msg and f"{len(data):,} bytes" in msg
    assert f"put it at {download_path(entry)}" in msg
    assert not download_path(entry).exists()


def test_the_mirror_is_used_when_the_primary_fails(home):
    data = blob()
    with FileServer({"mirror/w.pth": data}) as srv:
        entry = entry_for(data, [srv.url("gone.pth"), srv.url("mirror/w.pth")])
        assert download(entry, progress=False).read_bytes() == data


def test_killed_download_leaves_no_file_under_the_weights_name_and_resumes(home):
    data = blob(400_000)
    with FileServer({"w.pth": data}, drip=0.01) as srv:
        entry = entry_for(data, [srv.url("w.pth")])
        code = ("import sys; from posekit.engine.weights import download; from posekit.models.weights import "
                f"WeightsEntry; download(WeightsEntry(name='openpose_vgg19.test', model='openpose_vgg19', "
                f"task='t', filename={entry.filename!r}, urls=({entry.urls[0]!r},), sha256={entry.sha256!r}, "
                f"size={entry.size}, converter='cmu-openpose', preprocessing='', skeleton='', licence='', "
                "metric='', recipe='coco_openpose', source=''), progress=False)")
        proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "POSEKIT_HOME": str(home)})
        partial = partial_path(entry)
        deadline = time.monotonic() + 60
        while not (partial.exists() and partial.stat().st_size > 40_000) and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert partial.exists() and 0 < partial.stat().st_size < len(data)
        assert not download_path(entry).exists()  # the cache holds no file under the weights' name
        srv.drip = 0.0
        had = partial.stat().st_size
        assert download(entry, progress=False).read_bytes() == data
        assert srv.ranges[-1] == f"bytes={had}-"


# --- conversion and names ------------------------------------------------------------------------------------
SMALL = ("model.args.num_stages=2", "model.args.width=8")


def small_cmu_bytes(tmp_path, seed=0) -> bytes:
    """A state dict in the key layout of the PyTorch CMU file (`conv1_1.weight` ... `Mconv7_stage2_L2.bias`),
    for an openpose_vgg19 with 2 stages of width 8 (30 MB instead of 209 MB)."""
    with torch.device("meta"):
        model = openpose_vgg19(num_stages=2, width=8)
    shapes = model.state_dict()
    g = torch.Generator().manual_seed(seed)
    state = {f"{cmu}.{s}": torch.randn(shapes[f"{ours}.{s}"].shape, generator=g) * 0.01
             for cmu, ours in cmu_layer_names(model) for s in ("weight", "bias")}
    path = tmp_path / "small_cmu.pth"
    torch.save(state, path)
    return path.read_bytes()


def test_a_weights_name_downloads_converts_once_and_loads_in_predictor(home, tmp_path, monkeypatch):
    from posekit.engine.predictor import Predictor
    data = small_cmu_bytes(tmp_path)
    with FileServer({"body.pth": data}) as srv:
        entry = entry_for(data, [srv.url("body.pth")], convert_overrides=SMALL)
        monkeypatch.setitem(registry._WEIGHTS, entry.name, entry)
        path = resolve_checkpoint(entry.name, progress=False)
        assert path == converted_path(entry) and path.is_file()
        predictor = Predictor(entry.name)  # by name, from the cache: no second request
        assert len(srv.ranges) == 1
    assert predictor.model.normalization == "cmu" and len(predictor.model.stages) == 2
    state = torch.load(download_path(entry), weights_only=True)
    assert torch.equal(predictor.model.stages[1].heat[12].bias, state["Mconv7_stage2_L2.bias"])


def test_predict_cli_takes_a_weights_name(home, tmp_path, monkeypatch):
    """`posekit predict NAME photo --out DIR`, the one-line use (converted checkpoint already cached)."""
    from posekit.engine.convert import convert_cmu_openpose
    raw = tmp_path / "body.pth"
    raw.write_bytes(small_cmu_bytes(tmp_path))
    entry = entry_for(b"unused", ["http://127.0.0.1:9/never"], convert_overrides=SMALL)
    monkeypatch.setitem(registry._WEIGHTS, entry.name, entry)
    convert_cmu_openpose(raw, converted_path(entry), overrides=list(SMALL))
    out = tmp_path / "preds"
    image = tmp_path / "grey.png"
    from PIL import Image
    Image.fromarray(np.full((96, 128, 3), 127, np.uint8)).save(image)
    assert main(["predict", entry.name, str(image), "--out", str(out)]) == 0
    import json
    assert json.loads((out / "grey.json").read_text())["skeleton"] == "coco17"


def test_wrong_layout_passes_the_hash_but_is_refused_by_the_converter(home, tmp_path, monkeypatch, capsys):
    path = tmp_path / "partial.pth"
    torch.save({"conv1_1.weight": torch.zeros(64, 3, 3, 3)}, path)
    data = path.read_bytes()
    with FileServer({"w.pth": data}) as srv:
        entry = entry_for(data, [srv.url("w.pth")])
        monkeypatch.setitem(registry._WEIGHTS, entry.name, entry)
        with pytest.raises(ValueError, match="passed its sha256/size check but does not convert.*missing"):
            ensure_checkpoint(entry.name, progress=False)
        assert not converted_path(entry).exists()
        assert main(["weights", "download", entry.name, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("posekit weights: error: weights openpose_vgg19.test:") and "\n" not in err


def test_weights_cli_list_path_and_unknown_names(home, capsys):
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "openpose_vgg19.cmu" in out and "61.8" in out and "209.3 MB" in out and " no " in out
    assert main(["weights", "path", "openpose_vgg19.cmu"]) == 0
    assert capsys.readouterr().out.strip() == str(home / "weights" / "body_pose_model.pth")
    assert main(["weights", "download", "openpose_vgg19.cmuu"]) == 2
    assert "Did you mean openpose_vgg19.cmu" in capsys.readouterr().err
    # a mistyped name given where a checkpoint goes is named as such, not "file not found"
    assert main(["predict", "openpose_vgg19.cmuu", "x.jpg", "--out", str(home / "p")]) == 2
    assert "unknown weights 'openpose_vgg19.cmuu'" in capsys.readouterr().err


def test_cli_download_offline_is_one_line_with_where_to_put_the_file(home, monkeypatch, capsys):
    real = get_weights("openpose_vgg19.cmu")
    port = free_port()
    offline = WeightsEntry(**{**real.__dict__, "urls": (f"http://127.0.0.1:{port}/body_pose_model.pth",)})
    monkeypatch.setitem(registry._WEIGHTS, real.name, offline)
    assert main(["eval", "openpose_vgg19.cmu", "data.root=/nonexistent"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("posekit eval: error: cannot download weights openpose_vgg19.cmu") and "\n" not in err
    assert real.sha256 in err and "209,267,595 bytes" in err and str(home / "weights" / "body_pose_model.pth") in err


def test_registry_entries_are_complete_and_match_torchvision():
    from torchvision.models import MobileNet_V2_Weights, VGG19_Weights
    cmu = get_weights("openpose_vgg19.cmu")
    assert len(cmu.sha256) == 64 and cmu.size == 209_267_595 and len(cmu.urls) == 2
    assert get_weights("openpose_vgg19.imagenet").urls[0] == VGG19_Weights.IMAGENET1K_V1.url
    assert get_weights("dogs_mobilenetv2.imagenet").urls[0] == MobileNet_V2_Weights.IMAGENET1K_V1.url
    for name, tv in (("openpose_vgg19.imagenet", VGG19_Weights), ("dogs_mobilenetv2.imagenet", MobileNet_V2_Weights)):
        assert abs(get_weights(name).approx_mb - tv.IMAGENET1K_V1.meta["_file_size"]) < 0.1
    for e in registry.list_weights():
        assert e.name.startswith(e.model + ".") and e.metric and e.licence and e.preprocessing and e.recipe
    with pytest.raises(ValueError, match="sha256 or an exact size"):
        WeightsEntry(**{**cmu.__dict__, "sha256": None, "size": None})
    with pytest.raises(ValueError, match="<model>.<tag>"):
        WeightsEntry(**{**cmu.__dict__, "name": "cmu"})


def test_cache_is_torch_hub_unless_posekit_home(tmp_path, monkeypatch):
    monkeypatch.delenv("POSEKIT_HOME", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert cache_dir() == tmp_path / "torch" / "hub" / "checkpoints"
    monkeypatch.setenv("POSEKIT_HOME", str(tmp_path / "pk"))
    assert cache_dir() == tmp_path / "pk" / "weights"


def test_imagenet_backbones_use_the_same_cache_and_offline_message(home, monkeypatch):
    import posekit.models.openpose as op
    monkeypatch.setattr(op, "online", lambda *a, **k: False)
    entry = get_weights("openpose_vgg19.imagenet")
    with pytest.warns(RuntimeWarning) as caught:
        model = openpose_vgg19(pretrained="imagenet", num_stages=1)
    msg = str(caught[0].message)
    assert model.weights_source == "random" and entry.urls[0] in msg and str(download_path(entry)) in msg
    # a file placed at that path (as `posekit weights download` does) is what pretrained=imagenet loads
    g = torch.Generator().manual_seed(0)
    state = {f"features.{i}.{s}": torch.randn(p.shape, generator=g) for i, layer in enumerate(model.vgg)
             if isinstance(layer, torch.nn.Conv2d) for s, p in (("weight", layer.weight), ("bias", layer.bias))}
    download_path(entry).parent.mkdir(parents=True)
    torch.save(state, download_path(entry))
    loaded = openpose_vgg19(pretrained="imagenet", num_stages=1)
    assert loaded.weights_source == "cache" and torch.equal(loaded.vgg[0].weight, state["features.0.weight"])


def test_paths_pass_through_resolve_unchanged(tmp_path):
    f = tmp_path / "best.pt"
    f.write_bytes(b"x")
    assert resolve_checkpoint(str(f)) == str(f) and resolve_checkpoint(f) == f
    assert resolve_checkpoint("runs/missing/best.pt") == "runs/missing/best.pt"
    assert resolve_checkpoint("mpii_synthetic") == "mpii_synthetic"
    assert engine_weights.looks_like_weights_name("openpose_vgg19.cmux")
    assert not engine_weights.looks_like_weights_name("openpose_vgg19.pt")


# --- the CMU layout of pytorch-openpose, tensor by tensor --------------------------------------------------
def test_pytorch_openpose_block_layout_maps_tensor_by_tensor():
    """Hzzone/pytorch-openpose keeps CMU's layer names inside blocks model0 (conv1_1..conv4_4_CPM),
    model1_1/model1_2 (stage 1, L1 = PAF, L2 = heatmaps) ... model6_1/model6_2 (Mconv1..7_stage6_L1/L2).
    Every tensor of that layout lands on the module CMU's prototxt puts it in."""
    from test_openpose_model import cmu_forward, fake_cmu_state
    flat = fake_cmu_state()
    blocks = {}
    for key, value in flat.items():
        layer = key.split(".")[0]
        if layer.startswith("conv5_"):
            block = f"model1_{layer[-1]}"
        elif layer.startswith("Mconv"):
            block = f"model{layer.split('_stage')[1][0]}_{layer[-1]}"
        else:
            block = "model0"
        blocks[f"{block}.{key}"] = value
    assert len(blocks) == 184 and "model6_2.Mconv7_stage6_L2.bias" in blocks and "model0.conv4_4_CPM.weight" in blocks
    with torch.device("meta"):
        reference = openpose_vgg19()
    converted = convert_cmu_state_dict(blocks, model=reference)
    pairs = dict(cmu_layer_names(reference))
    for key, value in blocks.items():
        layer, suffix = key.split(".")[1:]
        assert converted[f"{pairs[layer]}.{suffix}"] is value  # the very tensor, not a copy or a neighbour
    assert len(converted) == len(blocks)
    # pytorch-openpose lists Mconv7_stage6_L1 twice in its no-ReLU list and Mconv7_stage6_L2 not at all,
    # so its final heatmaps pass a ReLU that CMU's prototxt does not have. posekit follows CMU: our
    # heatmaps equal the plain CMU network's, and relu() of them equals pytorch-openpose's output.
    model = openpose_vgg19()
    model.load_state_dict(convert_cmu_state_dict(flat), strict=True)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pafs, heats = model.forward_normalized(x)
        want_pafs, want_heats = cmu_forward(flat, x)
    assert torch.allclose(heats, want_heats, atol=1e-5) and torch.allclose(pafs, want_pafs, atol=1e-5)
    assert (heats[:, -1] < 0).any()  # the final layer really has no ReLU here
    assert torch.allclose(torch.relu(heats[:, -1]), torch.relu(want_heats[:, -1]), atol=1e-5)


def test_eval_scores_a_weights_name_on_coco_with_our_protocol(home, tmp_path, monkeypatch, realdata, capsys):
    """`posekit eval NAME data.root=...`: the published model (here a small CMU-layout file) is fetched,
    converted and scored by the same COCO OKS evaluation as a trained checkpoint."""
    import json
    data = small_cmu_bytes(tmp_path, seed=1)
    with FileServer({"body.pth": data}) as srv:
        entry = entry_for(data, [srv.url("body.pth")], convert_overrides=SMALL)
        monkeypatch.setitem(registry._WEIGHTS, entry.name, entry)
        report = tmp_path / "metrics.json"
        assert main(["eval", entry.name, f"data.root={realdata / 'coco'}", "eval.flip_test=false", "--json",
                     str(report)]) == 0
    metrics = json.loads(report.read_text())
    assert any(k.startswith("AP") for k in metrics) and all(np.isfinite(v) for v in metrics.values()
                                                              if isinstance(v, float))


def test_model_init_from_takes_a_weights_name(home, tmp_path, monkeypatch):
    """model.init_from=NAME starts training from the cached checkpoint of those weights."""
    from tiny_task import tiny_config

    from posekit.engine.checkpoint import load_checkpoint
    from posekit.engine.trainer import train
    source = train(tiny_config(tmp_path / "src", max_steps=2)) / "last.pt"
    entry = entry_for(b"unused", ["http://127.0.0.1:9/never"], name="openpose_vgg19.tiny")
    monkeypatch.setitem(registry._WEIGHTS, entry.name, entry)
    converted_path(entry).parent.mkdir(parents=True)
    converted_path(entry).write_bytes(source.read_bytes())  # as `posekit weights download` leaves it
    cfg = tiny_config(tmp_path / "dst", max_steps=1, lr_mult={"0.": 0.0})  # layer 0 frozen: stays as loaded
    cfg.model.init_from = entry.name
    run = train(cfg)
    src = load_checkpoint(source)["model"]
    assert torch.equal(load_checkpoint(run / "last.pt")["model"]["0.weight"], src["0.weight"])
