"""The status page in a real browser: Debian's headless Chromium driven
through Selenium (chromedriver from Debian too, nothing downloaded) during
a burst of jobs on the local backend. It checks what an operator reads off
the page against what the simulator and runfleetd's API say, that the page
redraws without a reload, that its script logs no error, and that it fits a
phone's screen. Screenshots are kept in build/artifacts/ (RUNFLEET_ARTIFACTS
to put them elsewhere)."""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import termios
import time
from pathlib import Path

import pytest
import requests
from tests.runfleetd import ROOT, Daemon, bin_dir
from tests.test_runfleetd import app_key_files, sim  # noqa: F401 (fixtures)

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

ARTIFACTS = Path(os.environ.get("RUNFLEET_ARTIFACTS", ROOT / "build" / "artifacts"))

POOLS = [
    dict(name="cpu", labels=["linux", "x64", "cpu"], max_runners=2),
    dict(name="gpu-1", labels=["linux", "x64", "gpu", "gpu-1"], max_runners=2, gpus=1, priority=10),
    dict(name="gpu-2", labels=["linux", "x64", "gpu", "gpu-2"], max_runners=2, gpus=2),
]


def chromium_paths() -> tuple[str, str]:
    browser = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    assert browser and driver, "scripts/dev.sh installs chromium and chromium-driver"
    return browser, driver


def browser(width: int, height: int):
    binary, driver = chromium_paths()
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              f"--window-size={width},{height}"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


def wait(pred, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = pred()
            if last:
                return last
        except Exception as e:  # the page may be between two redraws
            last = e
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def updates(drv) -> int:
    return int(drv.execute_script("return document.body.dataset.updates || '0'"))


def js_errors(drv) -> list[dict]:
    return [e for e in drv.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def gpu_cells(drv) -> list[dict]:
    return drv.execute_script(
        "return [...document.querySelectorAll('#gpumap .gpu')].map(e => ({"
        "state: e.dataset.state, holder: e.dataset.holder || null,"
        "job: e.dataset.job ? Number(e.dataset.job) : null, text: e.innerText}))")


def queue_rows(drv) -> dict[str, dict]:
    rows = drv.execute_script(
        "return [...document.querySelectorAll('#queue tr[data-pool]')].map(r => ({"
        "pool: r.dataset.pool, reason: r.querySelector('[data-reason]')?.dataset.reason,"
        "queued: Number(r.cells[1].innerText), text: r.innerText}))")
    return {r["pool"]: r for r in rows}


@pytest.fixture
def daemon(tmp_path, sim):  # noqa: F811
    d = Daemon(tmp_path, sim, pools=POOLS).start()
    yield d
    rc = d.stop()
    assert d.sanitizer_report() is None
    assert rc == 0, d.log()[-3000:]


def test_page_shows_the_gpus_and_the_queue_and_redraws_in_place(daemon, sim):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # Two one-GPU jobs and one two-GPU job take all four GPUs.
    busy = [sim.add_job(labels=["self-hosted", "gpu-1"], repo="acme/widgets", duration=120)
            for _ in range(2)]
    busy.append(sim.add_job(labels=["self-hosted", "gpu-2"], repo="acme/models", duration=120))
    wait(lambda: all(sim.job(j)["status"] == "in_progress" for j in busy), 60, "three jobs running")
    # Then one more of each: gpu-1 is at its max_runners, gpu-2 has no room.
    waiting_1 = sim.add_job(labels=["self-hosted", "gpu-1"], repo="acme/gadgets", duration=1)
    waiting_2 = sim.add_job(labels=["self-hosted", "gpu-2"], repo="acme/models", duration=1)
    daemon.wait_for(lambda: {q["pool"]: q["queued"] for q in daemon.api("queue")}
                    == {"cpu": 0, "gpu-1": 1, "gpu-2": 1}, what="two queued jobs")

    drv = browser(1366, 900)
    try:
        drv.get(daemon.url + "/")
        assert drv.title == "runfleet"
        wait(lambda: updates(drv) >= 1, 20, "the first redraw")
        role = drv.find_element(By.ID, "role")
        assert role.text == "serving" and role.get_attribute("data-role") == "single"
        marker = drv.execute_script("window.__marker = Math.random(); return window.__marker")

        # The GPU map: every GPU held by the runner the simulator gave its job to.
        runner_of = {sim.job(j)["runner_name"]: j for j in busy}
        cells = wait(lambda: (c := gpu_cells(drv)) and all(x["job"] for x in c) and c, 20,
                     "four GPUs with their jobs")
        assert len(cells) == 4
        assert {c["state"] for c in cells} == {"runner"}
        for c in cells:
            assert runner_of[c["holder"]] == c["job"], c
        assert sorted(c["job"] for c in cells) == sorted(busy[:2] + [busy[2], busy[2]])
        for c in cells:
            assert ("acme/models" if c["job"] == busy[2] else "acme/widgets") in c["text"], c
        api_nodes = daemon.get("/api/v1/nodes").json()["nodes"]
        assert sorted(g["holder"] for n in api_nodes for g in n["gpus"]) == \
            sorted(c["holder"] for c in cells)

        # The queue: each head and why it waits.
        rows = wait(lambda: (q := queue_rows(drv)) and len(q) == 2 and q, 20, "two queue rows")
        assert rows["gpu-1"]["reason"] == "max_runners", rows
        assert "max_runners (2) reached" in rows["gpu-1"]["text"]
        assert "acme/gadgets" in rows["gpu-1"]["text"]
        assert rows["gpu-2"]["reason"] == "capacity", rows
        assert "2 GPU" in rows["gpu-2"]["text"]
        assert drv.find_element(By.CSS_SELECTOR, "#charts svg polyline") is not None
        assert "acme/widgets" in drv.find_element(By.ID, "jobs").text
        drv.save_screenshot(str(ARTIFACTS / "console-desktop.png"))

        # A job ends: its GPU goes to the queued gpu-1 job, the page follows
        # without a reload.
        before = updates(drv)
        sim.cancel_job(busy[0])
        wait(lambda: sim.job(waiting_1)["status"] in ("in_progress", "completed"), 60,
             "the queued gpu-1 job to start")
        wait(lambda: "gpu-1" not in queue_rows(drv), 20, "gpu-1 gone from the queue")
        wait(lambda: busy[0] not in [c["job"] for c in gpu_cells(drv)], 20,
             "the ended job gone from the map")
        assert updates(drv) > before
        assert drv.execute_script("return window.__marker") == marker, "the page was reloaded"
        assert js_errors(drv) == []
    finally:
        drv.quit()
    for j in busy[1:] + [waiting_2]:
        sim.cancel_job(j)


def test_page_fits_a_phone(daemon, sim):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    job = sim.add_job(labels=["self-hosted", "gpu-2"], repo="acme/models", duration=60)
    wait(lambda: sim.job(job)["status"] == "in_progress", 60, "a running job")
    drv = browser(390, 844)
    try:
        drv.get(daemon.url + "/")
        wait(lambda: updates(drv) >= 1, 20, "the first redraw")
        wait(lambda: len([c for c in gpu_cells(drv) if c["state"] == "runner"]) == 2, 20,
             "two held GPUs")
        # Nothing wider than the screen but the tables, which scroll in their box.
        over = drv.execute_script(
            "return document.documentElement.scrollWidth - window.innerWidth")
        assert over <= 1, f"the page is {over}px wider than a phone screen"
        cell = drv.find_element(By.CSS_SELECTOR, "#gpumap .gpu")
        assert cell.size["width"] >= 100, cell.size
        drv.save_screenshot(str(ARTIFACTS / "console-phone.png"))
        assert js_errors(drv) == []
    finally:
        drv.quit()
    sim.cancel_job(job)


def test_page_and_its_json_only_on_the_admin_listener(daemon):
    assert daemon.get("/api/v1/leader").json() == {"election": False, "leading": True,
                                                    "holder": None}
    assert daemon.metric("runfleet_leader") == 1
    for path in ("/", "/api/v1/nodes", "/api/v1/queue", "/api/v1/history", "/api/v1/leader"):
        assert requests.get(daemon.public_url + path, timeout=5).status_code == 404, path
        assert requests.get(daemon.url + path, timeout=5).status_code == 200, path


def cli(daemon, *args: str) -> str:
    out = subprocess.run([str(bin_dir() / "runfleet"), *args, "--url", daemon.url],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_cli_queue_and_gpus_match_the_api(daemon, sim):
    busy = [sim.add_job(labels=["self-hosted", "gpu-2"], repo="acme/models", duration=60)
            for _ in range(2)]
    wait(lambda: all(sim.job(j)["status"] == "in_progress" for j in busy), 60, "two jobs running")
    waiting = sim.add_job(labels=["self-hosted", "gpu-1"], repo="acme/gadgets", duration=1)
    daemon.wait_for(lambda: [q["queued"] for q in daemon.api("queue") if q["pool"] == "gpu-1"]
                    == [1], what="a queued gpu-1 job")
    # --json is the API's answer.
    def still(nodes):  # what does not move between two calls
        for n in nodes:
            for g in n["gpus"]:
                (g.get("job") or {}).pop("running_seconds", None)
        return nodes

    assert still(json.loads(cli(daemon, "gpus", "--json"))["nodes"]) == \
        still(daemon.get("/api/v1/nodes").json()["nodes"])
    q = json.loads(cli(daemon, "queue", "--json"))["queue"]
    assert [(p["pool"], p["queued"], (p["reason"] or {}).get("code")) for p in q] == \
        [("cpu", 0, None), ("gpu-1", 1, "capacity"), ("gpu-2", 0, None)]
    # The tables say the same, in at most 100 columns, and no escape codes
    # when the output is not a terminal.
    table = cli(daemon, "queue")
    assert "\x1b" not in table
    rows = {line.split()[0]: line for line in table.splitlines()[1:]}
    assert rows["gpu-1"].split()[1] == "1"
    assert "capacity:" in rows["gpu-1"] and "acme/gadgets" in rows["gpu-1"]
    gpus = cli(daemon, "gpus")
    lines = gpus.splitlines()
    assert lines[0].split() == ["NODE", "GROUP", "GPU", "STATE", "POOL", "REPOSITORY", "RUNNING"]
    cells = {int(line.split()[2]): line.split() for line in lines[1:]}
    assert sorted(cells) == [0, 1, 2, 3]
    assert [c[3] for _, c in sorted(cells.items())] == ["runner"] * 4
    assert {c[5] for c in cells.values()} == {"acme/models"}
    assert max(len(line) for line in table.splitlines() + lines) <= 100
    for j in busy + [waiting]:
        sim.cancel_job(j)


def run_watch(daemon, keys: bytes) -> tuple[int, bytes]:
    """Runs `runfleet status --watch` on a pseudo-terminal that is its
    controlling terminal (so Ctrl-C there is SIGINT), waits for two
    redraws, types keys; returns its exit status and what it drew. The
    terminal's settings must be as before when it has quit."""
    master, slave = os.openpty()
    before = termios.tcgetattr(slave)

    def take_terminal():
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    p = subprocess.Popen([str(bin_dir() / "runfleet"), "status", "--watch", "--url", daemon.url],
                         stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                         preexec_fn=take_terminal)
    out = b""
    try:
        deadline = time.monotonic() + 30
        while out.count(b"runfleet status, every") < 2 and time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                out += os.read(master, 65536)
        assert out.count(b"runfleet status, every") >= 2, out[-2000:]
        assert termios.tcgetattr(slave)[3] & termios.ECHO == 0, "no raw mode while watching"
        os.write(master, keys)
        code = p.wait(timeout=10)
        while select.select([master], [], [], 0.2)[0]:
            out += os.read(master, 65536)
        assert termios.tcgetattr(slave) == before, "the terminal was not put back"
        return code, out
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)
        os.close(slave)


@pytest.mark.parametrize("key", [b"q", b"\x03"], ids=["q", "ctrl-c"])
def test_status_watch_redraws_and_quits_cleanly(daemon, key):
    code, out = run_watch(daemon, key)
    assert code == 0
    text = out.decode(errors="replace")
    assert "\x1b[?1049h" in text and text.rstrip().endswith("\x1b[?1049l"), text[-300:]
    assert "\x1b[?25h" in text  # the cursor is shown again
    assert text.count("\x1b[H\x1b[2J") >= 2  # redrawn in place, not scrolled
    assert "TOTAL" in text and "\x1b[1mPOOL" in text  # the heading bold on a terminal
