"""The course in a real browser: JupyterLab shows our widgets, and they react to a person's input.

nbval proves that the notebook cells run; it cannot see what JupyterLab makes of their outputs. Here a
throwaway JupyterLab server (loopback, a token, isolated Jupyter folders, the ``ci`` profile) serves
copies of the course notebooks, headless Chromium driven by Playwright runs notebooks 03 and 04 from the
Run menu, and the test uses their widgets with keyboard and mouse: the augmentation explorer of 03, and
the mask browser, the IoU painter and the clickable confusion matrix of 04. Screenshots of every step
go to a temporary folder named in failure messages.

Needs Debian's ``chromium`` (``/usr/bin/chromium``, or ``$SEGKIT_CHROMIUM``) and the ``playwright``
package (``pip install -e ".[test]"``; its browser download, ``playwright install``, is not used).
Without them the tests skip, unless ``SEGKIT_REQUIRE_BROWSER=1`` (CI) turns the skip into a failure.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.browser

NOTEBOOKS = ("04_my_fcn.ipynb", "03_augmentation.ipynb")  # the longer one starts first
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
RUN_TIMEOUT_S = 420  # a whole notebook on a busy 2-core machine (04 trains and sweeps rates)
REACT_TIMEOUT_MS = 20_000  # one widget round trip through the kernel
DIGEST_JS = """async img => {
    const bytes = await (await fetch(img.src)).arrayBuffer();
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
    return Array.from(digest, b => b.toString(16).padStart(2, "0")).join("");
}"""


def unavailable(reason: str) -> None:
    """Skip for want of a browser, or fail when ``SEGKIT_REQUIRE_BROWSER=1`` demands the test."""
    if os.environ.get("SEGKIT_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (SEGKIT_REQUIRE_BROWSER=1: the browser tests must run)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def chromium():
    """Headless Debian Chromium under Playwright; skips (or fails, see above) without them."""
    executable = Path(os.environ.get("SEGKIT_CHROMIUM", "/usr/bin/chromium"))
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable('playwright is not installed: pip install -e ".[test]"')
    if not executable.is_file():
        unavailable(f"no Chromium at {executable}: apt-get install chromium, or set SEGKIT_CHROMIUM")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def isolated_jupyter(base: Path) -> dict[str, str]:
    """Jupyter folders of their own: our python as the kernel, no news or update pop-ups."""
    env = {name: base / folder for name, folder in [
        ("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"), ("JUPYTER_RUNTIME_DIR", "runtime"),
        ("IPYTHONDIR", "ipython"), ("JUPYTERLAB_SETTINGS_DIR", "settings"),
        ("JUPYTERLAB_WORKSPACES_DIR", "workspaces")]}
    kernel = env["JUPYTER_DATA_DIR"] / "kernels" / "python3"
    kernel.mkdir(parents=True)
    (kernel / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)", "language": "python"}))
    notifications = env["JUPYTERLAB_SETTINGS_DIR"] / "@jupyterlab" / "apputils-extension"
    notifications.mkdir(parents=True)
    (notifications / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    return {name: str(folder) for name, folder in env.items()}


def api(url: str, token: str, path: str, method: str = "GET") -> None:
    headers = {"Authorization": f"token {token}"}
    with urllib.request.urlopen(urllib.request.Request(f"{url}{path}", method=method, headers=headers),
                                timeout=5):
        pass


@dataclass
class Server:
    url: str
    token: str
    log: Path  # the server's and its kernels' output
    data: Future  # the course data on the way: wait for it before running a notebook


@pytest.fixture(scope="module")
def lab_server(request, tmp_path_factory):
    """JupyterLab on loopback over a copy of the notebooks, in the ``ci`` profile, its data on the way."""
    base = tmp_path_factory.mktemp("lab")
    root = base / "root"
    root.mkdir()
    for notebook in (request.config.rootpath / "notebooks").glob("*.ipynb"):
        shutil.copy(notebook, root)
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch")
    env = {**os.environ, **isolated_jupyter(base), "SEGKIT_PROFILE": "ci", "SEGKIT_HOME": str(base / "home"),
           "XDG_CACHE_HOME": str(base / "cache"), "TORCH_HOME": torch_home}
    port, token, log = free_port(), secrets.token_hex(16), base / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
             f"--ServerApp.root_dir={root}"],
            env=env, cwd=root, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    # Meanwhile the data notebook 01 would have made, so that 03 and 04 can run side by side.
    with ThreadPoolExecutor(1) as pool:
        data = pool.submit(course_data, Path(env["SEGKIT_HOME"]))
        try:
            wait_until_serving(server, url, token, log)
            yield Server(url, token, log, data)
        finally:
            stop(server, url, token)


def course_data(home: Path) -> Path:
    """The ``ci`` profile's course data in the project folder ``home``, made as the notebooks would."""
    import torch

    from segkit.config import get_profile
    from segkit.course import Course

    return Course(get_profile("ci"), home, torch.device("cpu")).data


def wait_until_serving(server: subprocess.Popen, url: str, token: str, log: Path, timeout: float = 90
                       ) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"JupyterLab exited ({server.returncode}):\n{log.read_text()}", pytrace=False)
        try:
            api(url, token, "/api/status")
            return
        except OSError:
            time.sleep(0.25)
    pytest.fail(f"JupyterLab did not answer within {timeout} s:\n{log.read_text()}", pytrace=False)


def stop(server: subprocess.Popen, url: str, token: str) -> None:
    """Shut the server down through its API (it stops the kernels too); kill it only if that fails."""
    try:
        api(url, token, "/api/shutdown", method="POST")
        server.wait(timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


class Lab:
    """The JupyterLab page: opens and runs notebooks, finds outputs, keeps screenshots and errors."""

    def __init__(self, page, shots: Path, log: Path):
        self.page, self.shots, self.log = page, shots, log
        self.errors: list[str] = []  # uncaught exceptions in the page
        self.console: list[str] = []  # console errors, for the failure message only
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("console", lambda message: message.type == "error" and self.console.append(message.text))

    def shot(self, label: str) -> None:
        self.page.screenshot(path=self.shots / f"{len(list(self.shots.iterdir())):02d}-{label}.png")

    @contextmanager
    def step(self, what: str):
        """One thing a person checks: on failure, a screenshot and all the evidence in the message."""
        from playwright.sync_api import Error

        try:
            yield
        except (AssertionError, Error) as error:
            self.shot("failed")
            log = "\n".join(line[:200] for line in self.log.read_text().splitlines()[-8:])
            raise pytest.fail.Exception(
                f"{what}: {error}\nscreenshots: {self.shots}\npage errors: {self.errors}\n"
                f"console errors: {self.console[-5:]}\nserver log (end):\n{log}", pytrace=False) from None
        self.shot(re.sub(r"\W+", "-", what)[:60])

    def tab(self, name: str):
        return self.page.get_by_role("tab", name=name)

    def panel(self, name: str):
        return self.page.locator(f'.jp-NotebookPanel[aria-labelledby="{self.tab(name).get_attribute("id")}"]')

    def run_all(self, name: str) -> None:
        """Open ``name`` from the file browser and, once its kernel is idle, Run → Run All Cells."""
        from playwright.sync_api import expect

        with self.step(f"open and run {name}"):
            if not self.tab(name).count():
                self.page.locator(".jp-DirListing-item", has_text=name).dblclick()
            # The status bar, not the toolbar: its indicator says idle before the kernel is ready.
            expect(self.page.get_by_title(f"Change kernel for {name}")).to_have_text(
                re.compile(r"\| Idle$"), timeout=60_000)
            self.page.get_by_role("menuitem", name="Run", exact=True).click()
            self.page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
            first = self.panel(name).locator(".jp-CodeCell .jp-InputPrompt").first
            dialog = self.page.locator(".jp-Dialog")
            deadline = time.monotonic() + 15
            while first.text_content() == "[ ]:":  # queued cells show [*]
                if dialog.count():  # "Select Kernel": take the one proposed
                    dialog.locator(".jp-mod-accept").click()
                assert time.monotonic() < deadline, "Run All Cells did not start the cells"
                time.sleep(0.2)

    def finish(self, name: str) -> None:
        """Show ``name`` and wait until every code cell has run; an error stops this early."""
        with self.step(f"run {name} to the end"):
            self.tab(name).click()
            panel = self.panel(name)
            prompts = panel.locator(".jp-CodeCell .jp-InputPrompt")
            stderr = panel.locator('[data-mime-type="application/vnd.jupyter.stderr"]')
            deadline = time.monotonic() + RUN_TIMEOUT_S
            while True:
                shown = prompts.all_text_contents()  # once: the last cell may end meanwhile
                if all(re.fullmatch(r"\[\d+\]:", text) for text in shown):
                    return
                assert "[*]:" in shown, f"the run stopped: {shown}\n" + "\n".join(stderr.all_text_contents())
                assert time.monotonic() < deadline, f"still running after {RUN_TIMEOUT_S} s"
                time.sleep(0.5)

    def output(self, name: str, code: str):
        """The output area of the cell of notebook ``name`` whose source holds ``code``, in view."""
        cell = self.panel(name).locator(".jp-CodeCell", has_text=code)
        cell.scroll_into_view_if_needed()
        return cell.locator(".jp-OutputArea")


@pytest.fixture(scope="module")
def lab(chromium, lab_server, tmp_path_factory):
    """A JupyterLab page with notebooks 04 and 03 running (the kernels work side by side)."""
    from playwright.sync_api import expect

    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    lab = Lab(page, tmp_path_factory.mktemp("browser-screenshots"), lab_server.log)
    with lab.step("JupyterLab loads"):
        page.goto(f"{lab_server.url}/lab/tree/{NOTEBOOKS[0]}?token={lab_server.token}")
        expect(lab.tab(NOTEBOOKS[0])).to_be_visible(timeout=60_000)
        lab_server.data.result(timeout=180)
    for name in NOTEBOOKS:
        lab.run_all(name)
    yield lab
    page.close()


class Picture:
    """The picture an ``img`` element shows: its size and a digest of its bytes."""

    def __init__(self, img):
        self.img = img
        img.page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle())
        self.src = img.get_attribute("src")
        self.width = img.evaluate("img => img.naturalWidth")
        self.digest = img.evaluate(DIGEST_JS)

    def changed(self) -> Picture:
        """The next picture, once the element shows another one (fails if it shows the same)."""
        from playwright.sync_api import expect

        expect(self.img).not_to_have_attribute("src", self.src, timeout=REACT_TIMEOUT_MS)
        after = Picture(self.img)
        assert after.digest != self.digest, "the element reloaded, but the picture is the same"
        return after


def widget_output(lab: Lab, name: str, code: str, sliders: int):
    """The widget shown by the cell holding ``code``: checks it is real widgets, not their text repr."""
    from playwright.sync_api import expect

    output = lab.output(name, code)
    text = output.locator('.jp-RenderedText[data-mime-type="text/plain"]')
    expect(output.locator(".jupyter-widgets").or_(text).first).to_be_visible()
    text = text.all_text_contents()
    assert not text, f"JupyterLab shows text instead of widgets (is jupyterlab_widgets installed?): {text}"
    expect(output.locator(".widget-slider")).to_have_count(sliders)
    expect(output.locator("img.widget-image")).to_be_visible()
    return output


def test_augmentation_explorer_reacts(lab):
    from playwright.sync_api import expect

    name = NOTEBOOKS[1]
    lab.finish(name)
    with lab.step("03: the augmentation explorer shows sliders and its picture"):
        output = widget_output(lab, name, "AugmentationExplorer(image, mask)", sliders=7)
        expect(output.get_by_role("button", name="resample")).to_be_visible()
        caption = output.locator(".widget-html-content")
        expect(caption).to_contain_text("seed 0")
        picture = Picture(output.locator("img.widget-image"))
        size = re.search(r"output (\d+)×(\d+)", caption.text_content()).groups()
    with lab.step("03: brightness to its maximum (End key on the handle) adds colour jitter"):
        brightness = output.locator(".widget-slider", has_text="brightness")
        brightness.locator(".noUi-handle").press("End")
        expect(brightness.locator(".widget-readout")).to_have_text("1.00")
        expect(caption).to_contain_text("ColorJitter", timeout=REACT_TIMEOUT_MS)
        picture = picture.changed()
    with lab.step("03: resize 0.5 typed into the readout halves the output"):
        readout = output.locator(".widget-slider", has_text="resize").locator(".widget-readout")
        readout.fill("0.5")
        readout.press("Enter")
        expect(caption).to_contain_text(f"output {round(int(size[0]) / 2)}×{round(int(size[1]) / 2)}",
                                        timeout=REACT_TIMEOUT_MS)
        after = picture.changed()
        assert after.width < picture.width, "the picture did not shrink"
        picture = after
    with lab.step("03: resample draws anew with the next seed"):
        output.get_by_role("button", name="resample").click()
        expect(caption).to_contain_text("seed 1", timeout=REACT_TIMEOUT_MS)
        picture.changed()
    assert not lab.errors, f"errors in the page: {lab.errors}\nscreenshots: {lab.shots}"


def test_mask_browser_reacts(lab):
    from playwright.sync_api import expect

    name = NOTEBOOKS[0]
    lab.finish(name)
    with lab.step("04: the mask browser shows sliders, layer toggles and its picture"):
        output = widget_output(lab, name, "MaskBrowser.from_model", sliders=2)
        for layer in ("image", "ground truth", "prediction", "overlay", "errors"):
            expect(output.get_by_role("button", name=layer, exact=True)).to_be_visible()
        caption = output.locator(".widget-html-content").first
        expect(caption).to_contain_text("sample 1/")
        picture, before = Picture(output.locator("img.widget-image")), caption.text_content()
    with lab.step("04: two arrow keys on the sample handle show sample 3"):
        slider = output.locator(".widget-slider", has_text="sample")
        slider.locator(".noUi-handle").press("ArrowRight")
        slider.locator(".noUi-handle").press("ArrowRight")
        expect(slider.locator(".widget-readout")).to_have_text("2")
        expect(caption).to_contain_text("sample 3/", timeout=REACT_TIMEOUT_MS)
        assert index_of(caption.text_content()) != index_of(before), "the caption kept the sample index"
        picture = picture.changed()
    with lab.step("04: switching the error map off narrows the picture"):
        errors = output.get_by_role("button", name="errors", exact=True)
        errors.click()
        expect(errors).not_to_have_class(re.compile(r"\bmod-active\b"), timeout=REACT_TIMEOUT_MS)
        after = picture.changed()
        assert after.width < picture.width, "the picture kept its width"
        picture = after
    with lab.step("04: switching the overlay on widens it"):
        output.get_by_role("button", name="overlay", exact=True).click()
        expect(caption).to_contain_text("overlay: prediction", timeout=REACT_TIMEOUT_MS)
        after = picture.changed()
        assert after.width > picture.width, "the picture kept its width"
        picture = after
    with lab.step("04: opacity 0.9 typed into the readout repaints the overlay"):
        readout = output.locator(".widget-slider", has_text="opacity").locator(".widget-readout")
        readout.fill("0.9")
        readout.press("Enter")
        expect(readout).to_have_text("0.90")
        after = picture.changed()
        assert after.width == picture.width, "the picture changed size"
    assert not lab.errors, f"errors in the page: {lab.errors}\nscreenshots: {lab.shots}"


def test_iou_painter_repaints_and_recounts(lab):
    from playwright.sync_api import expect

    from segkit.labs.iou import EXAMPLE_GT, EXAMPLE_PRED, parse_map, score_maps

    name = NOTEBOOKS[0]
    lab.finish(name)
    gt, pred = parse_map(EXAMPLE_GT), parse_map(EXAMPLE_PRED)
    row, col = next((r, c) for r, c in zip(*np.nonzero((gt == pred) & (gt == labels_of("car"))), strict=True))
    before = score_maps(gt, pred)["classes"]["car"]
    pred[row, col] = labels_of("sky")
    after = score_maps(gt, pred)["classes"]["car"]
    with lab.step("04: the IoU painter shows two grids, the brush, the counts and the goal"):
        output = lab.output(name, 'IoUPainter(goal="accurate but useless")')
        painter = output.locator(".segkit-iou-painter")
        expect(painter).to_be_visible()
        expect(painter.locator(".segkit-iou-cell")).to_have_count(2 * gt.size)
        car = painter.locator(".segkit-iou-readout tr", has_text="car").first
        expect(car.locator("td").nth(1)).to_have_text(str(before["tp"]))
        expect(painter.locator(".segkit-iou-goal")).to_contain_text("✗")
    with lab.step("04: a sky brush on a right car cell of the prediction moves it from TP to FN"):
        painter.locator(".segkit-iou-brush").get_by_role("button", name="sky", exact=True).click()
        painter.locator(f".segkit-iou-pred-{row}-{col}").click()
        expect(car.locator("td").nth(1)).to_have_text(str(after["tp"]), timeout=REACT_TIMEOUT_MS)
        expect(car.locator("td").nth(3)).to_have_text(str(after["fn"]))
    assert not lab.errors, f"errors in the page: {lab.errors}\nscreenshots: {lab.shots}"


def test_confusion_matrix_cells_answer_a_click(lab):
    from playwright.sync_api import expect

    name = NOTEBOOKS[0]
    lab.finish(name)
    road = labels_of("road")
    with lab.step("04: the confusion explorer shows its cells, a caption and its picture"):
        output = lab.output(name, "ConfusionExplorer.from_model")
        explorer = output.locator(".segkit-confusion-explorer")
        expect(explorer).to_be_visible()
        assert explorer.locator(".segkit-confusion-cell").count() >= 4, "fewer cells than two classes give"
        caption = explorer.locator(".segkit-confusion-caption")
        expect(caption).to_contain_text("true ")
        picture = Picture(explorer.locator("img.widget-image"))
    with lab.step("04: a click on road's diagonal cell shows its true positives"):
        cell = explorer.locator(f".segkit-confusion-cell-{road}-{road}")
        cell.click()
        expect(cell).to_have_class(re.compile(r"\bsegkit-confusion-selected\b"), timeout=REACT_TIMEOUT_MS)
        expect(caption).to_contain_text("true road → predicted road", timeout=REACT_TIMEOUT_MS)
        expect(caption).to_contain_text("The diagonal")
        picture.changed()
    assert not lab.errors, f"errors in the page: {lab.errors}\nscreenshots: {lab.shots}"


def labels_of(name: str) -> int:
    from segkit.labels import CLASS_NAMES

    return CLASS_NAMES.index(name)


def index_of(caption: str) -> str:
    return re.search(r"index (\d+)", caption).group(1)
