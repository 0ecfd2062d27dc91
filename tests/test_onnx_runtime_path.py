"""The numpy-only deploy layer (posekit.runtime): ONNX metadata read through onnxruntime without
the onnx package, sessions with their thread count, one crop-matrix inverse and one PAF decoder
shared with the PyTorch path, and no torch / onnx / scipy on its import path."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from posekit.runtime.geometry import invert_affines, to_original_frame
from posekit.runtime.onnx import default_threads, parse_metadata, physical_cores
from posekit.runtime.paf import gaussian_smooth

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

# a meta_path hook that fails the import of the heavy packages: the runtime must never ask for them
HEAVY = ("torch", "onnx", "onnxscript", "scipy", "torchvision", "matplotlib", "h5py", "pycocotools")  # [train], [onnx]
FORBID = textwrap.dedent(f"""
    import sys
    class Forbid:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {HEAVY!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}} (refused: not in the deploy install)", name=name)
            return None
    sys.meta_path.insert(0, Forbid())
""")


def tiny_posekit_onnx(path, props: dict[str, str]):
    """A one-node Identity graph carrying `props` as metadata_props."""
    from onnx import TensorProto, helper
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, props)
    onnx.save(model, str(path))
    return path


def test_runtime_modules_import_no_torch_onnx_or_scipy():
    code = FORBID + "import posekit.runtime.onnx, posekit.runtime.paf, posekit.runtime.geometry, posekit.results\n"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]


def test_metadata_is_read_through_onnxruntime_without_the_onnx_package(tmp_path):
    path = tiny_posekit_onnx(tmp_path / "m.onnx", {"posekit.task": "hourglass", "posekit.config": json.dumps(
        {"task": "hourglass", "model": {"name": "x"}}), "posekit.outputs": json.dumps(["y"]), "other": "kept out"})
    code = FORBID + textwrap.dedent(f"""
        import json
        from posekit.runtime.onnx import open_session, read_metadata
        session = open_session({str(path)!r}, threads=1)
        print(json.dumps(read_metadata(session, "m.onnx")))
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    meta = json.loads(run.stdout)
    assert meta == {"task": "hourglass", "config": {"task": "hourglass", "model": {"name": "x"}}, "outputs": ["y"]}


def test_bad_metadata_and_bad_files_are_one_line_naming_the_file(tmp_path):
    from posekit.runtime.onnx import open_session
    with pytest.raises(ValueError, match=r"m\.onnx: metadata posekit\.outputs is not valid JSON"):
        parse_metadata({"posekit.config": "{}", "posekit.outputs": "[unclosed"}, "m.onnx")
    with pytest.raises(ValueError, match="not a posekit export"):
        parse_metadata({"producer": "someone"}, "m.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf")
    with pytest.raises(ValueError, match=r"cannot read ONNX file .*bad\.onnx") as e:
        open_session(bad)
    assert "\n" not in str(e.value)
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        open_session(tmp_path / "missing.onnx")


def test_session_threads_are_what_was_asked_and_default_to_the_physical_cores(tmp_path):
    from posekit.runtime.onnx import open_session
    path = tiny_posekit_onnx(tmp_path / "m.onnx", {"posekit.config": "{}"})
    assert default_threads(None) == physical_cores() >= 1
    assert default_threads(3) == 3
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="threads must be a whole number >= 1"):
            default_threads(bad)
    session = open_session(path, threads=1)
    assert np.allclose(session.run(None, {"x": np.ones((1, 2), np.float32)})[0], 1.0)


def test_predictor_threads_reach_the_onnxruntime_session(monkeypatch, tmp_path):
    """Predictor(threads=N) and load_onnx pass N to the one session they open."""
    import posekit.engine.onnx_backend as backend
    seen = []

    def fake_open(path, *, device="cpu", threads=None):
        seen.append(threads)
        raise ValueError("stop here")
    monkeypatch.setattr(backend, "open_session", fake_open)
    with pytest.raises(ValueError, match="stop here"):
        backend.load_onnx(tmp_path / "x.onnx", threads=2)
    assert seen == [2]


def test_numpy_smoothing_equals_scipy_within_an_ulp():
    scipy_ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(0)
    for shape in [(18, 46, 62), (3, 1, 5), (2, 2, 2), (4, 3, 1)]:
        maps = rng.normal(size=shape)
        for sigma in (0.3125, 0.375, 2.0, 5.0):  # 5.0: the kernel is wider than the map (repeated reflection)
            want = scipy_ndimage.gaussian_filter(maps, sigma=(0, sigma, sigma), mode="reflect")
            np.testing.assert_allclose(gaussian_smooth(maps, sigma), want, rtol=0, atol=1e-14)


def test_crop_inverse_maps_crop_points_back_and_is_the_one_topdown_uses():
    from posekit.data.topdown import to_original_frame as topdown_to_original
    from posekit.data.transforms import affine_points, crop_affine
    rng = np.random.default_rng(1)
    m = np.stack([crop_affine((rng.uniform(10, 90), rng.uniform(10, 50)), (rng.uniform(20, 60),) * 2, (64, 64),
                              rotation=rng.uniform(-30, 30), flip=bool(i % 2)) for i in range(4)])
    pts = rng.uniform(0, 100, (4, 5, 3))
    crop = np.stack([affine_points(p, mi) for p, mi in zip(pts, m)])
    back = to_original_frame(crop, m)
    np.testing.assert_allclose(back[..., :2], pts[..., :2], atol=1e-9)
    np.testing.assert_array_equal(back[..., 2], pts[..., 2])  # extra channels pass through
    np.testing.assert_array_equal(topdown_to_original(crop, m), back)
    np.testing.assert_allclose(np.einsum("nij,njk->nik", invert_affines(m)[:, :, :2], m[:, :, :2]),
                               np.broadcast_to(np.eye(2), (4, 2, 2)), atol=1e-12)
    with pytest.raises(ValueError, match=r"crop matrices must be \(N, 2, 3\)"):
        invert_affines(np.eye(3))


def test_codec_decoder_is_the_runtime_decoder():
    """One implementation: posekit.codecs.paf re-exports the runtime's grouping."""
    import posekit.codecs.paf as codec_paf
    import posekit.runtime.paf as runtime_paf
    for name in ("DecoderConfig", "find_peaks", "score_limbs", "match_limbs", "group_people"):
        assert getattr(codec_paf, name) is getattr(runtime_paf, name)


def test_cli_threads_below_one_is_one_line_before_the_model_loads(tmp_path, capsys):
    from posekit.cli import main
    (tmp_path / "m.pt").write_bytes(b"never read")
    (tmp_path / "a.jpg").write_bytes(b"never read")
    code = main(["predict", str(tmp_path / "m.pt"), str(tmp_path / "a.jpg"), "--out", str(tmp_path / "o"),
                 "--threads", "0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == "posekit predict: error: --threads must be at least 1, got 0"
