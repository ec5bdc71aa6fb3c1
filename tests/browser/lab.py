"""A JupyterLab server and a headless Chromium, driven as a reader drives them.

Used by ``test_browser.py`` (``make test-browser``) and runnable by hand::

    python -m tests.browser.lab 07_flash_attention      # Run All, screenshot, print what it saw

The server serves a *copy* of ``notebooks/`` (Run All autosaves outputs; the committed notebooks
stay clean), binds 127.0.0.1 with a random token, and keeps Jupyter's own settings: default
windowing, widget manager, plotly's mime renderer. Chromium is Debian's (``/usr/bin/chromium``):
Playwright's own browser download is not reachable from CI.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
CHROMIUM = os.environ.get("WORKBOOK_CHROMIUM", "/usr/bin/chromium")
# Chromium flags for a closed network: without the background-networking ones it keeps trying
# to reach Google's hosts at every start.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]

# Marks that plotly draws for data: line and marker paths of scatter traces, bar paths,
# heatmap images, filled areas. An "empty axes" figure has none of them.
TRACE_MARKS_JS = """
(plot) => {
  const q = (sel) => Array.from(plot.querySelectorAll(sel));
  const lines = q('.scatterlayer path.js-line').filter(p => (p.getAttribute('d') || '').length > 2);
  const points = q('.scatterlayer path.point');
  const bars = q('.barlayer path').filter(p => (p.getAttribute('d') || '') !== 'M0,0Z');
  const images = q('.heatmaplayer image, .imagelayer image');
  const fills = q('.scatterlayer path.js-fill').filter(p => (p.getAttribute('d') || '').length > 2);
  const traces = plot.data ? plot.data.length : 0;
  // the header: the title's box and the legend's, to check that neither covers the other
  const box = (el) => { if (!el) return null; const r = el.getBoundingClientRect();
                        return [r.left, r.top, r.right, r.bottom]; };
  return {lines: lines.length, points: points.length, bars: bars.length,
          images: images.length, fills: fills.length, traces: traces,
          title: (plot.querySelector('.gtitle') || {}).textContent || '',
          title_box: box(plot.querySelector('.gtitle')),
          legend_box: box(plot.querySelector('.legend')), plot_box: box(plot)};
}
"""
# The marks' geometry and the axes' tick labels: one of them changes when a control redraws the
# figure with other data (on an autoranged log axis a factor moves only the ticks).
FIGURE_SIGNATURE_JS = """
(plot) => Array.from(plot.querySelectorAll(
    '.scatterlayer path, .barlayer path, .heatmaplayer image, .shapelayer path, '
    + '.xtick text, .ytick text'))
  .map(p => (p.getAttribute('d') || p.getAttribute('href') || p.textContent || '').slice(0, 400))
  .join('|')
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Lab:
    """A running JupyterLab: ``url(path)`` gives a page's address with the token."""

    root: Path
    port: int
    token: str
    process: subprocess.Popen
    log: Path

    def url(self, path: str = "lab") -> str:
        return f"http://127.0.0.1:{self.port}/{path}?token={self.token}"

    def shutdown_kernels(self) -> None:
        """End every kernel, as closing a notebook with "Shut Down Kernel" does: each notebook
        then runs in a fresh kernel and none keeps its memory while the next one runs."""
        with urllib.request.urlopen(self.url("api/kernels"), timeout=30) as reply:
            kernels = json.loads(reply.read())
        for kernel in kernels:
            request = urllib.request.Request(self.url(f"api/kernels/{kernel['id']}"),
                                             method="DELETE")
            urllib.request.urlopen(request, timeout=60).close()


def _settings(folder: Path) -> Path:
    """Jupyter's defaults, less the news pop-up (it asks to reach the internet)."""
    news = folder / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True, exist_ok=True)
    news.write_text(json.dumps({"fetchNews": "false"}))
    return folder


@contextmanager
def jupyterlab(workdir: Path, *, timeout_s: float = 120.0):
    """Copy the notebooks to ``workdir`` and serve them; the server stops on exit."""
    root = workdir / "notebooks"
    shutil.copytree(NOTEBOOKS, root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    port, token = free_port(), secrets.token_hex(16)
    log = workdir / "jupyterlab.log"
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(workdir / "jupyter-config"),
           "JUPYTERLAB_WORKSPACES_DIR": str(workdir / "workspaces"),
           "JUPYTERLAB_SETTINGS_DIR": str(_settings(workdir / "lab-settings")),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={port}", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={root}", "--ServerApp.open_browser=False"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
    lab = Lab(root, port, token, process, log)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(lab.url("api/status"), timeout=5) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"JupyterLab did not start; its log:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield lab
    finally:
        try:
            os.killpg(process.pid, 15)
            process.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(process.pid, 9)
            except ProcessLookupError:
                pass


@contextmanager
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class NotebookRun:
    """What a reader would have seen after Run All."""

    name: str
    seconds: float
    errors: list[str] = field(default_factory=list)
    figures: list[dict] = field(default_factory=list)
    explorers: list[dict] = field(default_factory=list)
    screenshot: Path | None = None

    @property
    def covered_headers(self) -> list[dict]:
        """Figures whose legend and title overlap (by more than 2 px each way)."""
        return [f for f in self.figures if f.get("title_box") and f.get("legend_box")
                and _overlap(f["title_box"], f["legend_box"])]

    @property
    def cut_titles(self) -> list[dict]:
        """Figures whose title runs past the figure's right edge (there the browser cuts it)."""
        return [f for f in self.figures if f.get("title_box") and f.get("plot_box")
                and f["title_box"][2] > f["plot_box"][2] + 1]

    @property
    def blank_figures(self) -> list[dict]:
        return [f for f in self.figures
                if not (f["lines"] or f["points"] or f["bars"] or f["images"] or f["fills"])]


def _overlap(a: list[float], b: list[float], slack: float = 2.0) -> bool:
    """Whether two [left, top, right, bottom] boxes overlap by more than ``slack`` px each way."""
    return (min(a[2], b[2]) - max(a[0], b[0]) > slack
            and min(a[3], b[3]) - max(a[1], b[1]) > slack)


def _wait_until_idle(page, timeout_s: float) -> None:
    """Run All is done when no cell waits ('[*]') and the kernel reports idle."""
    deadline = time.monotonic() + timeout_s
    page.wait_for_timeout(1500)
    while time.monotonic() < deadline:
        busy = page.evaluate("""() => {
            const prompts = Array.from(document.querySelectorAll(
                '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt'))
                .map(p => p.textContent);
            const waiting = prompts.filter(t => t.includes('*')).length;
            const unrun = prompts.filter(t => !/\\d/.test(t)).length;
            return {waiting, unrun, total: prompts.length};
        }""")
        if busy["total"] and not busy["waiting"] and not busy["unrun"]:
            return
        page.wait_for_timeout(1000)
    raise TimeoutError(f"Run All did not finish within {timeout_s:.0f} s")


def _run_all(page) -> None:
    page.click("div.lm-MenuBar-itemLabel:text-is('Run')")
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()


def _errors(page) -> list[str]:
    """Error outputs (tracebacks) and the one-line ⚠ errors of the workbook."""
    return page.evaluate("""() => Array.from(document.querySelectorAll(
        '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output')).filter(o =>
            o.getAttribute('data-mime-type') === 'application/vnd.jupyter.stderr'
              && /Traceback|Error/.test(o.textContent)
            || /^\\s*⚠/.test(o.textContent)).map(o => o.textContent.slice(0, 600))""")


def _figures(page, artifacts: Path | None = None, name: str = "") -> list[dict]:
    found = []
    plots = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .js-plotly-plot")
    for i in range(plots.count()):
        plot = plots.nth(i)
        plot.scroll_into_view_if_needed()
        page.wait_for_timeout(150)
        found.append({"index": i, **plot.evaluate(TRACE_MARKS_JS)})
        if artifacts is not None:
            plot.screenshot(path=str(artifacts / f"{name}.figure{i:02d}.png"))
    return found


def _set_control(explorer, page) -> str | None:
    """Move the explorer's first control as a reader would; returns what was done."""
    select = explorer.locator("select")
    if select.count():
        # the options' text from the DOM (``inner_text`` of an <option> came back '' once,
        # make test of 2026-12-05: a hidden element has no rendered text)
        options = select.first.evaluate("s => Array.from(s.options).map(o => o.text)")
        current = select.first.evaluate("s => s.options[s.selectedIndex].text")
        pick = next((i for i in reversed(range(len(options))) if options[i] != current), None)
        if pick is None:
            return None
        other = options[pick]
        # by position: a match by label timed out once on 12 ("did not find some options",
        # make test on 2 cores; the same test passed alone): the position needs no label text
        select.first.select_option(index=pick)
        return f"dropdown {current!r} → {other!r}"
    readout = explorer.locator(".widget-readout")
    if readout.count():
        box = readout.first
        before = box.inner_text()
        box.click()
        page.keyboard.press("Control+A")
        # The slider's maximum: far from any default, inside the range by construction.
        slider = explorer.locator(".widget-slider").first
        high = slider.evaluate(
            "s => s.querySelector('.noUi-handle')?.getAttribute('aria-valuemax')")
        page.keyboard.type(str(high if high not in (None, before) else before + "0"))
        page.keyboard.press("Enter")
        return f"slider {before} → {high}"
    text = explorer.locator(".widget-text input")
    if text.count():  # a number typed in (08: how a value rounds in each format)
        before = text.first.input_value()
        after = "0.1" if before != "0.1" else "3.5"
        text.first.fill(after)
        text.first.press("Enter")
        return f"text {before!r} → {after!r}"
    return None


def _explorers(page) -> list[dict]:
    found = []
    boxes = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .wb-explorer")
    for i in range(boxes.count()):
        box = boxes.nth(i)
        box.scroll_into_view_if_needed()
        plot = box.locator(".js-plotly-plot").first
        if not plot.count():
            found.append({"index": i, "changed": False, "action": "no figure drawn"})
            continue
        before = plot.evaluate(FIGURE_SIGNATURE_JS)
        action = _set_control(box, page)
        changed = False
        # the kernel redraws; the new figure replaces the old one (up to 20 s: 04's explorer
        # took longer than 10 s once, in a make test on 2 cores, and passed alone)
        for _ in range(80):
            page.wait_for_timeout(250)
            plot = box.locator(".js-plotly-plot").first
            if plot.count() and plot.evaluate(FIGURE_SIGNATURE_JS) != before:
                changed = True
                break
        found.append({"index": i, "changed": changed, "action": action})
    return found


def open_and_run_all(page, lab: Lab, name: str, workspace: str, timeout_s: float) -> None:
    """Open notebook ``name`` in a fresh ``workspace``, wait for its kernel, Run All, and wait
    until the kernel is idle again."""
    # A workspace of its own, reset: JupyterLab would otherwise reopen the notebooks of
    # earlier pages (their tabs, their kernels) beside this one.
    page.goto(lab.url(f"lab/workspaces/{workspace}/tree/{name}.ipynb") + "&reset",
              wait_until="domcontentloaded")
    page.wait_for_selector(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell",
                           timeout=120_000)
    # The kernel must be up before Run All, or the first cells queue behind its start.
    page.wait_for_function("() => /\\|\\s*Idle/.test(document.querySelector("
                           "'.jp-StatusBar-Widget, #jp-main-statusbar')?.textContent || '')",
                           timeout=120_000)
    _run_all(page)
    _wait_until_idle(page, timeout_s)


def press_panel(browser, lab: Lab, name: str, artifacts: Path, *,
                timeout_s: float = 300.0) -> dict:
    """Run All of ``name``, then on its first experiment panel (``wb-panel``) move the first
    slider and press Run, as a reader does; what the panel then shows (its drawn marks, the
    table of runs, the message line)."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        open_and_run_all(page, lab, name, f"wb-panel-{name}", timeout_s)
        panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .wb-panel").first
        panel.scroll_into_view_if_needed()
        before = panel.locator(".js-plotly-plot").count()
        # The first slider, typed to twice its value (at most its maximum), as a reader does.
        readout = panel.locator(".widget-readout").first
        handle = panel.locator(".widget-slider .noUi-handle").first
        shown = ""
        for _ in range(40):  # a cell scrolled into view draws its widgets a moment later
            shown = readout.inner_text().strip() or (handle.get_attribute("aria-valuenow") or "")
            if shown:
                break
            page.wait_for_timeout(500)
        start = int(float(shown))
        high = handle.get_attribute("aria-valuemax")
        moved = min(2 * start, int(float(high))) if high else start + 1
        readout.click()
        page.keyboard.press("Control+A")
        page.keyboard.type(str(moved))
        page.keyboard.press("Enter")
        action = f"slider {start} → {moved}"
        page.wait_for_timeout(1000)  # the kernel checks the new value against the config
        panel.locator("button", has_text="Run").first.click()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            page.wait_for_timeout(500)
            if "run 1:" in panel.inner_text() and panel.locator(".js-plotly-plot").count():
                break
        page.wait_for_timeout(1000)  # plotly's async draw
        plot = panel.locator(".js-plotly-plot").first
        marks = plot.evaluate(TRACE_MARKS_JS) if plot.count() else {}
        text = panel.inner_text()
        artifacts.mkdir(parents=True, exist_ok=True)
        panel.screenshot(path=str(artifacts / f"{name}.panel.png"))
        return {"action": action, "moved": moved, "figures_before": before, "marks": marks,
                "text": text, "table": panel.locator("table").first.inner_text()
                if panel.locator("table").count() else "", "errors": _errors(page)}
    finally:
        page.close()
        lab.shutdown_kernels()


def _save(page, path: Path, timeout_s: float = 30.0) -> None:
    """Save as a reader does (Ctrl+S) and wait until the file on disk holds the outputs."""
    before = path.stat().st_mtime
    page.click("div.lm-MenuBar-itemLabel:text-is('File')")
    page.locator(".lm-Menu-itemLabel", has_text="Save Notebook").first.click()
    deadline = time.monotonic() + timeout_s
    while path.stat().st_mtime == before and time.monotonic() < deadline:
        page.wait_for_timeout(250)


def offline_figures(browser, html: Path, artifacts: Path | None = None) -> list[dict]:
    """Open an exported HTML file with every network request refused; the marks per figure."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    blocked: list[str] = []

    def only_files(route):
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    page.route("**/*", only_files)
    try:
        page.goto(html.resolve().as_uri(), wait_until="load")
        page.wait_for_timeout(1000)
        plots = page.locator(".js-plotly-plot")
        found = [plots.nth(i).evaluate(TRACE_MARKS_JS) for i in range(plots.count())]
        if artifacts is not None:
            page.screenshot(path=str(artifacts / f"{html.stem}.html.png"))
    finally:
        page.close()
    return found


def run_notebook(browser, lab: Lab, name: str, artifacts: Path, *,
                 timeout_s: float = 900.0) -> NotebookRun:
    """Open ``name``, Run All, wait, and collect errors, figures and explorer responses."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    console: list[str] = []
    page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}")
            if msg.type == "error" else None)
    start = time.monotonic()
    try:
        open_and_run_all(page, lab, name, f"wb-{name}", timeout_s)
        seconds = time.monotonic() - start
        page.wait_for_timeout(2000)  # late widget views and plotly's async draw
        artifacts.mkdir(parents=True, exist_ok=True)
        run = NotebookRun(name, seconds, _errors(page), _figures(page, artifacts, name))
        run.explorers = _explorers(page)
        _save(page, lab.root / f"{name}.ipynb")
    finally:
        artifacts.mkdir(parents=True, exist_ok=True)
        shot = artifacts / f"{name}.png"
        page.screenshot(path=str(shot), full_page=True)
        (artifacts / f"{name}.console.txt").write_text("\n".join(console))
        page.close()
        lab.shutdown_kernels()
    run.screenshot = shot
    (artifacts / f"{name}.json").write_text(json.dumps(
        {"seconds": run.seconds, "errors": run.errors, "figures": run.figures,
         "explorers": run.explorers}, indent=1))
    return run


def main(argv: list[str]) -> int:
    import tempfile

    names = argv or sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    artifacts = ROOT / "artifacts" / "browser"
    with tempfile.TemporaryDirectory() as tmp, jupyterlab(Path(tmp)) as lab, chromium() as browser:
        for name in names:
            run = run_notebook(browser, lab, name, artifacts)
            print(f"{name}: {run.seconds:.0f} s, {len(run.errors)} errors, "
                  f"{len(run.figures)} figures ({len(run.blank_figures)} blank), explorers "
                  f"{[e['changed'] for e in run.explorers]}, screenshot {run.screenshot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
