"""The report in a real browser: headless Chromium opens index.html from disk, every image
loads, nothing is logged to the console as an error, and a screenshot is written. Skips where
no Chromium is installed (.ci/run installs it)."""
import os
import re
import shutil
import subprocess

import pytest

from test_report import _report

CHROMIUM = next((p for p in (os.environ.get("POSEKIT_CHROMIUM"), shutil.which("chromium"),
                             shutil.which("chromium-browser"), shutil.which("google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (apt-get install chromium)")

# appended to a COPY of the page (the report itself carries no script): after load, the page's
# title says how many images did not decode
_PROBE = ("<script>window.addEventListener('load',()=>{const bad=[...document.images].filter("
          "i=>!(i.complete&&i.naturalWidth>0)).map(i=>i.getAttribute('src'));"
          "document.title='PROBE images='+document.images.length+' broken='+bad.length+' '+bad.join(',');});</script>")


def _chromium(*args, timeout=90):
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--allow-file-access-from-files", "--enable-logging=stderr", "--v=0",
                           "--virtual-time-budget=10000", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("family", ["hourglass", "openpose"])
def test_report_opens_from_disk_with_every_image_loaded(family, tmp_path):
    index, _ = _report(family, tmp_path, "rep", max_samples=None if family == "openpose" else 12)
    probe = index.parent / "probe.html"
    probe.write_text(index.read_text().replace("</body>", _PROBE + "</body>"))
    run = _chromium("--dump-dom", probe.as_uri())
    title = re.search(r"<title>(PROBE[^<]*)</title>", run.stdout)
    assert title, f"the page did not load: {run.stderr[-2000:]}"
    n_images, broken = (int(v) for v in re.search(r"images=(\d+) broken=(\d+)", title.group(1)).groups())
    assert n_images >= 3 and broken == 0, title.group(1)
    # the report page itself: no console error, no failed resource, and a screenshot
    shot = tmp_path / f"report_{family}.png"
    run = _chromium(f"--screenshot={shot}", "--window-size=1280,2400", "--hide-scrollbars", index.as_uri())
    errors = [line for line in run.stderr.splitlines()
              if "CONSOLE" in line and ("error" in line.lower() or "Uncaught" in line) or "Failed to load resource" in line]
    assert not errors, errors
    assert shot.is_file() and shot.stat().st_size > 10_000
    out = os.environ.get("POSEKIT_SCREENSHOT_DIR")
    if out:  # keep it where a person can look at it
        os.makedirs(out, exist_ok=True)
        shutil.copy(shot, os.path.join(out, shot.name))
