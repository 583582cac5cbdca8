"""Check in a real browser that notebooks run in JupyterLab, and look at their pictures as a reader does.

Why: nbval runs notebooks in a kernel, where widgets are only Python objects and a picture is only
bytes. Whether the playground's controls really appear and respond in JupyterLab, and whether a
picture is readable at the size the page shows it, only a browser can tell. This script starts
JupyterLab on copies of the notebooks (so nothing is saved into the repository), runs all cells
through JupyterLab's own command, then checks the page: no error output, and each picture saved
on its own as shown (``NN_pictureK.png``; the log gives its drawn and shown sizes). In the
playground it also drives the controls as a reader would: an image, an uploaded landscape photo,
an uploaded portrait photo (capped at 640 px high), an uploaded phone video (stored sideways:
its frames must be upright), tracking, and "Clear uploads", saving ``07_<step>.png`` after each.

Needs Debian's Chromium and Playwright (neither is in requirements: this is a maintainer's check):

    apt install chromium && .venv-dev/bin/python -m pip install playwright
    .venv/bin/python scripts/browser_check.py [notebooks/NN_x.ipynb ...] --python .venv-dev/bin/python

JupyterLab is the one beside the Python that runs this script (``.venv``'s: the reader's); ``--python`` is a
Python with Playwright (by default the same one).

It uses the tiny offline model unless MOLMO_MODEL_ID is set. Screenshots go to
``downloaded_data/outputs/browser_check/``; read them (they are the point of the check).
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

from PIL import Image

from molmo_nb_utils.paths import INPUT_DIR
from molmo_nb_utils.tiny import build_tiny_molmo2

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"

# Runs in the Python that has playwright; gets the page URL, the screenshot folder, the notebook's
# number and a folder of files to upload.
BROWSER_SCRIPT = r'''
import sys, time
from pathlib import Path
from playwright.sync_api import sync_playwright

url, shots, name, uploads = sys.argv[1], Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
log = lambda message: print(message, flush=True)
flags = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
ALL_RAN = """() => {
    const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(e => e.textContent.trim());
    const idle = document.querySelector('.jp-Notebook-ExecutionIndicator[data-status="idle"]');
    return idle && prompts.length > 0 && prompts.every(text => /^\[\d+\]:$/.test(text));
}"""
STATE = """() => [document.querySelector('.jp-Notebook-ExecutionIndicator').dataset.status,
    [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(e => e.textContent.trim()).join(' ')]"""
IDLE = "document.querySelector('.jp-Notebook-ExecutionIndicator[data-status=\"idle\"]')"
WATCH_BUSY = """() => {
    window.sawBusy = false;
    const indicator = document.querySelector('.jp-Notebook-ExecutionIndicator');
    new MutationObserver(() => { if (indicator.dataset.status === 'busy') window.sawBusy = true; })
        .observe(indicator, {attributes: true});
}"""
# Every picture in the outputs: its drawn size and the size the page shows it at.
SIZES = """(e) => {
    const natural = e.tagName === 'IMG' ? [e.naturalWidth, e.naturalHeight] : [e.videoWidth, e.videoHeight];
    const box = e.getBoundingClientRect();
    return [e.tagName.toLowerCase(), natural[0], natural[1], Math.round(box.width), Math.round(box.height)];
}"""
PICTURES = ".jp-OutputArea-output img, .jp-OutputArea-output video"


def shoot_pictures(scope, prefix):
    pictures = scope.locator(PICTURES)
    sizes = []
    for k in range(pictures.count()):
        picture = pictures.nth(k)
        picture.scroll_into_view_if_needed()
        time.sleep(0.3)
        picture.screenshot(path=str(shots / f"{prefix}_picture{k}.png"))
        tag, nw, nh, w, h = picture.evaluate(SIZES)
        sizes.append((w, h))
        log(f"  {prefix}_picture{k}.png: {tag} drawn {nw}x{nh}, shown {w}x{h}")
    return sizes


def playground(page):
    controls = {n: page.locator(f".jupyter-widgets :text-is('{n}')").count() for n in ["Media", "Task", "Prompt", "Run"]}
    if not all(controls.values()):
        raise SystemExit(f"FAIL: controls missing in the page: {controls}")
    log(f"controls rendered: {controls}")
    widget = page.locator(".widget-vbox").filter(has=page.locator("button:has-text('Clear uploads')")).first
    images = widget.locator("select[multiple]").first
    video = widget.locator(".widget-dropdown select").first

    def upload(path):
        with page.expect_file_chooser() as chooser:  # as a reader does: the Upload button's file dialog
            widget.locator("button:has-text('Upload')").first.click()
        chooser.value.set_files(str(path))

    def click(text):
        widget.locator(f"button:text-is('{text}')").first.click()
        time.sleep(0.5)

    def run(step, text="Points found"):
        # A run is over when the kernel, having been busy with the click, is idle again and the
        # output under the button says what it found (the output is cleared when a run starts).
        page.evaluate(WATCH_BUSY)
        click("Run")
        page.wait_for_function(
            f"() => window.sawBusy && {IDLE} && document.querySelector('.widget-output').innerText.includes({text!r})",
            timeout=300_000,
        )
        time.sleep(2)
        widget.screenshot(path=str(shots / f"07_{step}.png"))
        log(f"07_{step}.png: Images list shown: {images.is_visible()}, Video list shown: {video.is_visible()}")
        return shoot_pictures(widget.locator(".widget-output"), f"07_{step}")

    def listed(label):
        try:
            page.wait_for_function(
                f"() => [...document.querySelectorAll('option')].some(o => o.textContent.replace(/\\u00a0/g, ' ') === {label!r})",
                timeout=60_000,
            )
        except Exception:
            widget.screenshot(path=str(shots / "07_upload_failed.png"))
            raise SystemExit(f"FAIL: after the upload no list names {label!r} (see 07_upload_failed.png)")

    def selected(select):
        # ipywidgets writes spaces in option labels as no-break spaces
        return select.evaluate("s => [...s.selectedOptions].map(o => o.textContent.replace(/\\u00a0/g, ' '))")

    click("images")
    click("point")
    if video.is_visible() or not images.is_visible():
        raise SystemExit("FAIL: with Media 'images' the Video list is shown or the Images list hidden")
    run("image")
    upload(uploads / "landscape.jpg")
    listed("landscape.jpg (uploaded)")
    time.sleep(1)
    log(f"after uploading landscape.jpg the Images list selects {selected(images)}")
    run("upload_landscape")
    upload(uploads / "portrait.jpg")
    listed("portrait.jpg (uploaded)")
    time.sleep(1)
    log(f"after uploading portrait.jpg the Images list selects {selected(images)}")
    sizes = run("upload_portrait")
    if not sizes or max(h for _, h in sizes) > 640:
        raise SystemExit(f"FAIL: the portrait upload is shown at {sizes}, taller than 640 px")
    upload(uploads / "phone_clip.mp4")
    time.sleep(3)
    log(f"after uploading phone_clip.mp4 the Video list selects {selected(video)}")
    if "phone_clip.mp4 (uploaded)" not in selected(video) or images.is_visible() or not video.is_visible():
        raise SystemExit("FAIL: after a video upload the Video list does not show and select it")
    sizes = run("upload_phone_video")
    if not sizes or max(h for _, h in sizes) > 640:
        raise SystemExit(f"FAIL: the phone video's frames are shown at {sizes}, taller than 640 px")
    video.select_option(label="moving_objects.mp4")
    click("track")
    run("track", "Tracks found")
    click("Clear uploads")
    time.sleep(2)
    widget.screenshot(path=str(shots / "07_after_clear.png"))
    click("images")
    left = page.evaluate("() => [...document.querySelectorAll('option')].some(o => o.textContent.includes('(uploaded)'))")
    log(f"after Clear uploads: Images list selects {selected(images)}; any upload still listed: {left}")
    if left:
        raise SystemExit("FAIL: Clear uploads left uploads in the lists")
    log("OK: the playground's lists, uploads, pictures and Clear uploads work in the browser")


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
    page.wait_for_function(IDLE, timeout=120_000)
    page.add_style_tag(content=".Toastify, .jp-toast-container { display: none !important; }")  # "Jupyter news?"
    log("JupyterLab is up and the kernel idle: running all cells")
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")  # don't await it
    deadline, said = time.time() + 600, time.time()
    while not page.evaluate(ALL_RAN):
        if time.time() > deadline:
            page.screenshot(path=str(shots / f"{name}_not_all_ran.png"), full_page=True)
            raise SystemExit(f"FAIL: the cells did not all run within 10 minutes: {page.evaluate(STATE)}")
        if time.time() - said > 60:
            log(f"  still running: {page.evaluate(STATE)}")
            said = time.time()
        time.sleep(5)
    time.sleep(3)
    page.screenshot(path=str(shots / f"{name}_after_run_all.png"), full_page=True)
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']").count()
    if errors:
        raise SystemExit(f"FAIL: {errors} error output(s) after running all cells")
    log("all cells ran without errors; the pictures as shown:")
    shoot_pictures(page, name)
    if page.locator(".jupyter-widgets :text-is('Run')").count():
        playground(page)
    browser.close()
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def upload_files(folder: Path) -> None:
    """What a reader might upload: a landscape and a portrait photo, and a phone video stored sideways."""
    with Image.open(INPUT_DIR / "cat.jpg") as cat:
        cat.resize((cat.width * 3, cat.height * 3)).save(folder / "landscape.jpg")
    with Image.open(INPUT_DIR / "astronaut.jpg") as astronaut:
        astronaut.crop((100, 0, 388, 512)).resize((682, 1213)).save(folder / "portrait.jpg")
    shutil.copy(INPUT_DIR / "bunny_phone.mp4", folder / "phone_clip.mp4")


def missing_tools(python: str) -> list[str]:
    """What this check needs and does not find, each with how to install it (it is no lesson's fault)."""
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(f"Chromium ({CHROMIUM}): apt install chromium")
    if not (Path(sys.executable).parent / "jupyter").is_file():
        missing.append(f"JupyterLab beside {sys.executable}: run this script with .venv/bin/python")
    found = subprocess.run([python, "-c", "import playwright.sync_api"], capture_output=True)
    if found.returncode:
        missing.append(f"Playwright for {python}: {python} -m pip install playwright")
    return missing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", default=[str(REPO / "notebooks" / "07_playground.ipynb")])
    parser.add_argument("--python", default=sys.executable, help="a Python with playwright installed")
    parser.add_argument("--out", default=str(REPO / "downloaded_data" / "outputs" / "browser_check"))
    args = parser.parse_args()
    missing = missing_tools(args.python)
    if missing:
        raise SystemExit(
            "The browser check lacks what it needs (Chromium and Playwright are not in requirements.txt: it is a "
            "maintainer's check); no notebook was run. Missing:\n  " + "\n  ".join(missing)
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    with tempfile.TemporaryDirectory() as tmp:
        if not env.get("MOLMO_MODEL_ID"):
            env["MOLMO_MODEL_ID"] = str(build_tiny_molmo2(Path(tmp) / "tiny-molmo2"))
            # what the lessons write is this throwaway model's: into the temporary folder, not the checkout
            env.setdefault("MOLMO_DATA_DIR", str(Path(tmp) / "data"))
        workdir, uploads = Path(tmp) / "lab", Path(tmp) / "uploads"
        workdir.mkdir()
        uploads.mkdir()
        for notebook in args.notebooks:
            shutil.copy(notebook, workdir)
        upload_files(uploads)
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
            failed = []
            for notebook in args.notebooks:
                name = Path(notebook).name
                url = f"{base}/lab/tree/{name}?token={token}"
                done = subprocess.run(
                    [args.python, "-c", BROWSER_SCRIPT, url, str(out), name[:2], str(uploads)]
                )
                if done.returncode:
                    failed.append(name)
            print(f"screenshots in {out}" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
            return 1 if failed else 0
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
