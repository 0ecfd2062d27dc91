"""Video sources for `posekit predict --source` and `Predictor.track`: files, folders of frames,
webcams and stream URLs, and what happens when one is broken."""
from __future__ import annotations

import functools
import http.server
import itertools
import json
import socket
import threading

import cv2
import numpy as np
import pytest

from posekit.data.video import FrameFolderReader, open_source


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from conftest import smoke_checkpoints
    return smoke_checkpoints(tmp_path_factory)("openpose")


def _frames(n=6, size=(96, 72)):
    return [np.full((size[1], size[0], 3), 20 + 30 * i, np.uint8) for i in range(n)]


def _avi(path, n=30):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (64, 48))
    for i in range(n):
        writer.write(np.full((48, 64, 3), (i * 8) % 255, np.uint8))
    writer.release()
    return path


def _predict(*argv):
    from posekit.cli import main
    return main(["predict", *map(str, argv), "--no-progress"])


def test_a_folder_of_frames_is_read_in_natural_order(tmp_path):
    for i in (10, 2, 1):
        cv2.imwrite(str(tmp_path / f"frame{i}.png"), np.full((8, 8, 3), i, np.uint8))
    reader = open_source(str(tmp_path))
    assert isinstance(reader, FrameFolderReader)
    assert [p.name for p in reader.files] == ["frame1.png", "frame2.png", "frame10.png"]
    assert [int(f[0, 0, 0]) for f in reader] == [1, 2, 10]


def test_a_folder_with_a_bad_frame_names_it_skips_it_and_counts_it(checkpoint, tmp_path, capsys):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(_frames(4)):
        cv2.imwrite(str(folder / f"f{i}.png"), frame)
    (folder / "f2.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    code = _predict(checkpoint, "--source", folder, "--out", tmp_path / "out", "--track")
    err = capsys.readouterr().err
    assert code == 1  # documented: some inputs could not be read, the rest written
    assert "f2.png" in err and "1 frame(s) could not be read and were skipped" in err
    lines = (tmp_path / "out" / "frames.jsonl").read_text().splitlines()
    assert len(lines) == 3 and all("track_ids" in json.loads(x) for x in lines)


def test_a_missing_webcam_is_a_one_line_error(tmp_path, capsys):
    ckpt = tmp_path / "x.pt"
    ckpt.write_bytes(b"")  # never loaded: the source is opened first
    assert _predict(ckpt, "--source", "7", "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot open camera 7" in err[0] and err[0].startswith("posekit predict: error:")
    assert not (tmp_path / "o").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_stream_url_is_a_one_line_error(tmp_path, capsys):
    ckpt = tmp_path / "x.pt"
    ckpt.write_bytes(b"")
    url = f"http://127.0.0.1:{_free_port()}/live.avi"  # nothing listens there
    assert _predict(ckpt, "--source", url, "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"cannot open stream {url}" in err[0]


def test_a_stream_url_is_read_through_opencv(tmp_path):
    _avi(tmp_path / "clip.avi", n=12)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        reader = open_source(f"http://127.0.0.1:{server.server_address[1]}/clip.avi")
        assert reader.frame_count == 0 and sum(1 for _ in reader) == 12
    finally:
        server.shutdown()
        server.server_close()


def test_a_cut_stream_keeps_the_frames_before_the_cut_with_a_note(checkpoint, tmp_path, capsys):
    data = _avi(tmp_path / "full.avi").read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[:len(data) // 2])  # the recording stopped mid-way
    code = _predict(checkpoint, tmp_path / "cut.avi", "--out", tmp_path / "out", "--track")
    err = capsys.readouterr().err
    assert code == 0 and "cut or truncated" in err
    lines = (tmp_path / "out" / "cut.jsonl").read_text().splitlines()
    assert 0 < len(lines) < 30
    assert sum(1 for _ in open_source(tmp_path / "out" / "cut.mp4")) == len(lines)


def test_a_zero_frame_file_is_skipped_in_one_line_and_writes_nothing(checkpoint, tmp_path, capsys):
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert _predict(checkpoint, tmp_path / "empty.mp4", "--out", tmp_path / "out", "--track") == 1
    err = [x for x in capsys.readouterr().err.splitlines() if "empty.mp4" in x]
    assert len(err) == 1 and "skipped" in err[0]
    assert not list((tmp_path / "out").iterdir())
    capsys.readouterr()
    assert _predict(checkpoint, "--source", tmp_path / "empty.mp4", "--out", tmp_path / "out2") == 2
    assert "cannot open video" in capsys.readouterr().err


def test_tracking_streams_frames_without_holding_the_video(checkpoint):
    from posekit.engine.predictor import Predictor
    pulled = []

    def endless():
        for i in itertools.count():
            pulled.append(i)
            yield np.full((72, 96, 3), 100, np.uint8)

    predictor = Predictor(checkpoint)
    out = list(itertools.islice(predictor.track(endless(), batch_size=2), 5))
    assert len(out) == 5 and len(pulled) <= 6  # frames are pulled one chunk ahead, never the whole source


def test_a_folder_without_frames_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    ckpt = tmp_path / "x.pt"
    ckpt.write_bytes(b"")
    assert _predict(ckpt, "--source", tmp_path / "empty", "--out", tmp_path / "o") == 2
    assert "no image frames in folder" in capsys.readouterr().err
