"""Check in a real browser that a notebook runs in JupyterLab and its widgets render and respond.

Why: nbval runs notebooks in a kernel, where widgets are only Python objects. Whether the
playground's controls really appear in JupyterLab, and whether pressing Run really answers, only a
browser can tell. This script starts JupyterLab on a copy of the notebook (so nothing is saved into
the repository), runs all cells through JupyterLab's own command, then checks the page: no error
output, the controls rendered, and a click on Run that prints a new answer under the button.

Needs Debian's Chromium and Playwright (neither is in requirements: this is a maintainer's check):

    apt install chromium && pip install playwright
    .venv/bin/python scripts/browser_check.py [notebooks/07_playground.ipynb] [--python /path/with/playwright]

It uses the tiny offline model unless MOLMO_MODEL_ID is set.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"

# Runs in the Python that has playwright; gets the page URL and the output folder as arguments.
BROWSER_SCRIPT = r"""
import sys, time
from playwright.sync_api import sync_playwright

url, shots = sys.argv[1], sys.argv[2]
log = lambda message: print(message, flush=True)
flags = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
ALL_RAN = '''() => {
    const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(e => e.textContent.trim());
    const idle = document.querySelector('.jp-Notebook-ExecutionIndicator[data-status="idle"]');
    return idle && prompts.length > 0 && prompts.every(text => /^\[\d+\]:$/.test(text));
}'''
STATE = "() => [document.querySelector('.jp-Notebook-ExecutionIndicator').dataset.status, [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(e => e.textContent.trim())]"
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=flags)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    log(f"opening {url.split('?')[0]}")
    page.goto(url, timeout=120_000)
    page.wait_for_function("window.jupyterapp && document.querySelector('.jp-Notebook')", timeout=120_000)
    select = page.locator(".jp-Dialog button:has-text('Select')")  # a fresh server may ask which kernel
    try:
        select.wait_for(timeout=15_000)
        select.click()
    except Exception:
        pass
    page.wait_for_function("document.querySelector('.jp-Notebook-ExecutionIndicator[data-status=\"idle\"]')", timeout=120_000)
    log("JupyterLab is up and the kernel idle: running all cells")
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")  # don't await it
    deadline = time.time() + 600
    while not page.evaluate(ALL_RAN):
        if time.time() > deadline:
            raise SystemExit("FAIL: the cells did not all run within 10 minutes")
        time.sleep(5)
        log(page.evaluate(STATE))
    page.screenshot(path=f"{shots}/after_run_all.png", full_page=True)
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']").count()
    if errors:
        raise SystemExit(f"FAIL: {errors} error output(s) after running all cells")
    controls = {name: page.locator(f".jupyter-widgets :text-is('{name}')").count() for name in ["Media", "Task", "Prompt", "Run"]}
    if not all(controls.values()):
        raise SystemExit(f"FAIL: controls missing in the page: {controls}")
    log(f"all cells ran without errors; controls rendered: {controls}")
    found = "() => document.body.innerText.split('Points found').length - 1"
    before = page.evaluate(found)
    page.locator(".jupyter-widgets button:has-text('Run')").first.click()
    try:
        page.wait_for_function(f"({found})() > {before}", timeout=300_000)
    finally:
        page.screenshot(path=f"{shots}/after_click.png", full_page=True)
    log(f"OK: pressing Run answered again under the button ('Points found' {before} -> {page.evaluate(found)} times)")
    browser.close()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebook", nargs="?", default=str(REPO / "notebooks" / "07_playground.ipynb"))
    parser.add_argument("--python", default=sys.executable, help="a Python with playwright installed")
    parser.add_argument("--out", default=str(REPO / "downloaded_data" / "outputs" / "browser_check"))
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} not found: apt install chromium")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    with tempfile.TemporaryDirectory() as tmp:
        if not env.get("MOLMO_MODEL_ID"):
            from molmo_nb_utils.tiny import build_tiny_molmo2

            env["MOLMO_MODEL_ID"] = str(build_tiny_molmo2(Path(tmp) / "tiny-molmo2"))
        workdir = Path(tmp) / "lab"
        workdir.mkdir()
        shutil.copy(args.notebook, workdir)
        port, token = free_port(), secrets.token_hex(16)
        jupyter = Path(sys.executable).parent / "jupyter"
        command = [str(jupyter), "lab", "--no-browser", "--expose-app-in-browser", f"--port={port}",
                   f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={workdir}", "--ServerApp.port_retries=0"]  # fmt: skip
        if os.geteuid() == 0:
            command.append("--allow-root")
        server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(120):
                try:
                    urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                    break
                except OSError:
                    time.sleep(1)
            url = f"{base}/lab/tree/{Path(args.notebook).name}?token={token}"
            return subprocess.run([args.python, "-c", BROWSER_SCRIPT, url, str(out)]).returncode
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
