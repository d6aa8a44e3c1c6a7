"""JupyterLab for real: a headless server on loopback lists the notebooks and runs code through
its own kernel; a screenshot of ``/lab`` in headless Chromium (skipped without Chromium;
``make screenshot`` runs it and keeps the picture)."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import nbformat
import pytest
import requests
import websocket

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on 127.0.0.1 with a token, root at notebooks/; yields (base_url, token)."""
    port, token = _free_port(), secrets.token_hex(16)
    home = tmp_path_factory.mktemp("jupyter-home")
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip", "127.0.0.1",
           f"--port={port}", f"--ServerApp.token={token}", f"--ServerApp.root_dir={NOTEBOOKS}",
           "--ServerApp.port_retries=0"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    settings = home / "lab-settings"
    (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
     ).write_text('{"fetchNews": "false"}')  # no news prompt over the screenshot
    (settings / "@jupyterlab" / "docmanager-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "docmanager-extension" / "plugin.jupyterlab-settings"
     ).write_text('{"autosave": false}')  # the notebooks opened here are never written back
    before = {p.name: p.read_bytes() for p in NOTEBOOKS.glob("*.ipynb")}
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
           "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTERLAB_SETTINGS_DIR": str(settings),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    log = (home / "lab.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                if requests.get(f"{base}/api/status", params={"token": token}, timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("JupyterLab did not start:\n" + (home / "lab.log").read_text())
            time.sleep(0.3)
        yield base, token
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
    after = {p.name: p.read_bytes() for p in NOTEBOOKS.glob("*.ipynb") if p.name in before}
    assert after == {k: v for k, v in before.items() if k in after}, "a notebook was modified"


def _api(lab, method: str, path: str, **kwargs):
    base, token = lab
    r = requests.request(method, f"{base}{path}", headers={"Authorization": f"token {token}"},
                         timeout=30, **kwargs)
    r.raise_for_status()
    return r.json() if r.content else None


def _execute(ws, code: str, timeout_s: float = 120) -> dict:
    """Run ``code`` on the kernel behind the websocket ``ws``; returns stdout and the error."""
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test",
                   "session": uuid.uuid4().hex, "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": True,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}}))
    out, error, deadline = [], None, time.time() + timeout_s
    while time.time() < deadline:
        ws.settimeout(max(deadline - time.time(), 0.1))
        msg = json.loads(ws.recv())
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind = msg["msg_type"]
        if kind == "stream":
            out.append(msg["content"]["text"])
        elif kind == "error":
            error = f"{msg['content']['ename']}: {msg['content']['evalue']}"
        elif kind == "status" and msg["content"]["execution_state"] == "idle":
            return {"stdout": "".join(out), "error": error}
    raise TimeoutError(f"no answer from the kernel within {timeout_s} s for {code[:60]!r}")


def test_server_lists_the_notebooks(lab):
    listing = _api(lab, "GET", "/api/contents")
    served = sorted(i["name"] for i in listing["content"] if i["type"] == "notebook")
    assert served == sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert served, "notebooks/ holds the series"
    first = _api(lab, "GET", f"/api/contents/{served[0]}")
    assert first["type"] == "notebook" and first["content"]["cells"]


def test_a_notebook_runs_through_the_server_kernel(lab, tmp_path):
    """As JupyterLab does when a notebook is opened: a session for the notebook starts a kernel
    in the notebook's folder; the parameters cell of each served notebook and a computation with
    rfcxlib run on it; closing the session shuts the kernel down."""
    base, token = lab
    names = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) or ["scratch.ipynb"]
    session = _api(lab, "POST", "/api/sessions", json={
        "path": names[0], "name": names[0], "type": "notebook", "kernel": {"name": "python3"}})
    kernel_id = session["kernel"]["id"]
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{base.rsplit(':', 1)[1]}/api/kernels/{kernel_id}/channels",
        header=[f"Authorization: token {token}"], timeout=60)
    try:
        for name in names if (NOTEBOOKS / names[0]).exists() else []:
            nb = nbformat.reads(json.dumps(_api(lab, "GET", f"/api/contents/{name}")["content"]),
                                as_version=4)
            cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
            assert len(cells) == 1, f"{name}: one cell tagged 'parameters'"
            result = _execute(ws, cells[0].source + "\nprint(repr(data_dir), repr(run_dir))")
            assert result["error"] is None and result["stdout"].strip() == "'' ''", (name, result)
        result = _execute(ws, "import os, rfcxlib, numpy as np\n"
                              "from rfcxlib.runner.run_dir import RunDir\n"
                              f"run = RunDir({str(tmp_path / 'run')!r})\n"
                              "run.update_metrics('check', {'x': float(np.arange(4).sum())})\n"
                              "print(rfcxlib.NUM_SPECIES, run.metrics()['check']['x'], os.getcwd())")
        assert result["error"] is None, result
        assert result["stdout"].split() == ["24", "6.0", str(NOTEBOOKS)]
        failing = _execute(ws, "1 / 0")
        assert failing["error"].startswith("ZeroDivisionError")
    finally:
        ws.close()
        _api(lab, "DELETE", f"/api/sessions/{session['id']}")
    assert kernel_id not in [k["id"] for k in _api(lab, "GET", "/api/kernels")]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_lab_screenshot(lab, tmp_path):
    """``/lab`` rendered by headless Chromium shows the JupyterLab page (not an error page)."""
    from rfcxlib.reports.browser import screenshot

    base, token = lab
    out = Path(os.environ.get("RFCX_SCREENSHOT_DIR") or tmp_path) / "jupyterlab.png"
    png = screenshot(f"{base}/lab/tree/01_eda.ipynb?token={token}", out, width=1280,
                     height=800, wait_ms=20000)
    from PIL import Image

    image = Image.open(png).convert("RGB")
    assert image.size == (1280, 800)
    colours = image.resize((64, 40)).getcolors(64 * 40)
    assert colours is not None and len(colours) > 20, "a rendered page, not a blank one"


@pytest.mark.slow
def test_a_whole_notebook_runs_through_the_server_kernel(lab, tiny_data_dir, tmp_path):
    """01_eda, every cell in order, on the tiny data set, on a kernel of the server's session."""
    base, token = lab
    nb = nbformat.reads(json.dumps(_api(lab, "GET", "/api/contents/01_eda.ipynb")["content"]),
                        as_version=4)
    session = _api(lab, "POST", "/api/sessions", json={
        "path": "01_eda.ipynb", "name": "01_eda.ipynb", "type": "notebook",
        "kernel": {"name": "python3"}})
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{base.rsplit(':', 1)[1]}/api/kernels/{session['kernel']['id']}/channels",
        header=[f"Authorization: token {token}"], timeout=60)
    run = tmp_path / "run"
    try:
        for cell in (c for c in nb.cells if c.cell_type == "code"):
            code = cell.source
            if "parameters" in cell.metadata.get("tags", []):
                code += f"\ndata_dir = {str(tiny_data_dir)!r}\nrun_dir = {str(run)!r}\n"
            result = _execute(ws, code, timeout_s=300)
            assert result["error"] is None, (cell.source[:200], result)
    finally:
        ws.close()
        _api(lab, "DELETE", f"/api/sessions/{session['id']}")
    assert list((run / "figures").glob("*.png")), "the notebook saved its figures"
