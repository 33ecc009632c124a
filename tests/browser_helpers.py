"""Running the app in a subprocess and driving it with Debian's Chromium through Playwright.

The app gets a fresh XMODAL_HOME (its own run store and labels) whose slow-to-build,
content-keyed caches — converted weights, built data sets, frozen features, the default
gallery's embeddings, projections — are links into a persistent cache home
(`$XMODAL_TEST_CACHE`, default the repository's `.xmodal`), so the second run of the
browser tests does not rebuild them.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SHARED_CACHES = ("models", "datasets", "features", "projections", "galleries/default")
SCREENSHOTS = REPO / "assets" / "screenshots"
ARTIFACTS = REPO / "tests" / "artifacts"


def cache_home() -> Path:
    path = Path(os.environ.get("XMODAL_TEST_CACHE", REPO / ".xmodal")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def make_home(root: Path) -> Path:
    """A fresh xmodal home under `root` whose caches link into `cache_home()`."""
    home = root / "xmodal-home"
    home.mkdir(parents=True, exist_ok=True)
    cache = cache_home()
    for rel in SHARED_CACHES:
        src = cache / rel
        src.mkdir(parents=True, exist_ok=True)
        dst = home / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            dst.symlink_to(src, target_is_directory=True)
    return home


def install_default_model(home: Path, timeout: float = 3600) -> None:
    """Give `home` the default model: trained once under `cache_home()` (the same home `make run`
    uses by default, so a developer's model is reused; 10-15 minutes on 2 cores the first time),
    then copied in (`python -m trainers.default_model --from CACHE`)."""
    cache = cache_home()
    for target, args in ((cache, ["--quiet"]), (home, ["--from", str(cache)])):
        env = dict(os.environ, XMODAL_HOME=str(target), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
        done = subprocess.run([sys.executable, "-m", "trainers.default_model", *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"default model for {target} failed ({done.returncode}):\n{done.stdout}\n{done.stderr[-4000:]}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class App:
    """`python app.py` on a free port with its own home; `stop()` ends it (and only it)."""

    def __init__(self, home: Path, log: Path, port: int | None = None, extra_args: tuple[str, ...] = ()):
        self.home, self.log_path = home, log
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, XMODAL_HOME=str(home), GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1",
                   PYTHONUNBUFFERED="1")
        self._log = open(log, "ab")
        self.proc = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--port", str(self.port), *extra_args],
                                     cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.started = time.monotonic()

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Seconds until `/config` answers; raises with the log tail if the app died or never answered."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the app exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/config", timeout=2) as resp:
                    if resp.status == 200:
                        return time.monotonic() - start
            except OSError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"the app did not answer /config within {timeout:.0f} s:\n{self.log_tail()}")

    def cpu_seconds(self) -> float:
        """User + system CPU time the app process has used so far (Linux)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def config(self) -> dict:
        import json

        with urllib.request.urlopen(self.url + "/config", timeout=5) as resp:
            return json.loads(resp.read())

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """End the app and what it started (training workers): its own process group only."""
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.proc.wait(timeout=5)
        time.sleep(0.5)
        self._signal_group(signal.SIGKILL)  # a worker that outlived the app
        self._log.close()

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)  # the group was created for this app (start_new_session)
        except ProcessLookupError:
            pass


def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


def screenshot(page, name: str) -> Path:
    """A full-page PNG in assets/screenshots/ (toasts closed first, so they do not cover the page)."""
    for btn in page.locator(".toast-close").all():
        try:
            btn.click(timeout=1000)
        except Exception:  # noqa: BLE001 - a toast that went away by itself
            pass
    page.wait_for_timeout(300)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def failure_artifacts(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        (ARTIFACTS / f"{name}.html").write_text(page.content(), encoding="utf-8")
    except Exception:  # noqa: BLE001 - artifacts are best effort; the test failure is what matters
        pass
