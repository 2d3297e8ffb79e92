"""What runfleetd exports on /metrics, checked against the process itself
and against the Grafana dashboard the Helm chart ships: the process metrics
every Prometheus client library exports (read from /proc as they are), GPU
occupancy by holder, and every metric name a dashboard panel queries."""

from __future__ import annotations

import json
import os
import re
import sys
import time

import pytest
from tests.runfleetd import ROOT, Daemon
from tests.test_runfleetd import app_key_files, sim  # noqa: F401 (fixtures)

DASHBOARD = ROOT / "helm" / "runfleet" / "dashboards" / "runfleet.json"


def scrape(d: Daemon) -> tuple[dict[str, float], dict[str, str]]:
    return d._scrape()


def proc_stat(pid: int) -> list[str]:
    text = open(f"/proc/{pid}/stat").read()
    return text[text.rindex(")") + 2:].split()


def btime() -> float:
    for line in open("/proc/stat"):
        if line.startswith("btime "):
            return float(line.split()[1])
    raise AssertionError("no btime in /proc/stat")


@pytest.fixture
def daemon(tmp_path, sim):  # noqa: F811
    pools = [
        dict(name="cpu", labels=["linux", "x64", "cpu"], max_runners=2),
        dict(name="gpu-2", labels=["linux", "x64", "gpu", "gpu-2"], max_runners=2, gpus=2,
             min_idle=1),
    ]
    d = Daemon(tmp_path, sim, pools=pools).start()
    yield d
    rc = d.stop()
    assert d.sanitizer_report() is None
    assert rc == 0, d.log()[-3000:]


def test_process_metrics_are_those_of_proc(daemon):
    pid = daemon.proc.pid
    ticks = os.sysconf("SC_CLK_TCK")
    page = os.sysconf("SC_PAGE_SIZE")
    before, types = scrape(daemon)
    for name, kind in [("process_cpu_seconds_total", "counter"), ("process_open_fds", "gauge"),
                       ("process_max_fds", "gauge"), ("process_virtual_memory_bytes", "gauge"),
                       ("process_resident_memory_bytes", "gauge"),
                       ("process_start_time_seconds", "gauge")]:
        assert types.get(name) == kind, name
    f = proc_stat(pid)
    # starttime is field 22, vsize 23, rss 24 (proc(5)); the list starts at 3.
    start = btime() + int(f[19]) / ticks
    assert abs(before["process_start_time_seconds"] - start) < 0.02
    limits = open(f"/proc/{pid}/limits").read()
    soft = re.search(r"Max open files\s+(\S+)", limits).group(1)
    assert before["process_max_fds"] == (-1 if soft == "unlimited" else float(soft))
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    # The scrape's own connection comes and goes; a few fds either way.
    assert abs(before["process_open_fds"] - fds) <= 4, (before["process_open_fds"], fds)
    rss = int(f[21]) * page
    assert 0.5 * rss < before["process_resident_memory_bytes"] < 2 * rss
    assert before["process_virtual_memory_bytes"] >= before["process_resident_memory_bytes"]
    # Work makes the CPU counter move, never back.
    t_end = time.monotonic() + 1.0
    while time.monotonic() < t_end:
        daemon.get("/api/v1/pools")
    after, _ = scrape(daemon)
    assert after["process_cpu_seconds_total"] > before["process_cpu_seconds_total"]
    cpu = (int(proc_stat(pid)[11]) + int(proc_stat(pid)[12])) / ticks
    assert abs(after["process_cpu_seconds_total"] - cpu) < 0.2


def test_gpus_by_holder(daemon):
    def gpus():
        samples, _ = scrape(daemon)
        return {h: samples.get(f'runfleet_gpus{{holder="{h}",node_group="local"}}')
                for h in ("runner", "devserver", "free", "unhealthy")}

    # gpu-2 keeps one idle runner of two GPUs: two held, two free.
    daemon.wait_for(lambda: gpus()["runner"] == 2, what="the idle GPU runner's GPUs held")
    assert gpus() == {"runner": 2, "devserver": 0, "free": 2, "unhealthy": 0}


def dashboard_metric_names() -> dict[str, set[str]]:
    """{metric name: panel titles} for every name a panel's expression uses."""
    dash = json.loads(DASHBOARD.read_text())
    names: dict[str, set[str]] = {}
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            # Label values, and names inside them, are not metric names.
            expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
            for m in re.findall(r"\b((?:runfleet|process)_[a-z0-9_]+)\b", expr):
                names.setdefault(m, set()).add(panel["title"])
    return names


def test_every_dashboard_expression_queries_an_exported_metric(daemon):
    _, types = scrape(daemon)
    names = dashboard_metric_names()
    assert len(names) >= 15, sorted(names)
    for name, panels in sorted(names.items()):
        family = name
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and types.get(name[: -len(suffix)]) == "histogram":
                family = name[: -len(suffix)]
        assert family in types, f"panel(s) {sorted(panels)} query {name}, which runfleetd does not export"
        if family != name:
            assert types[family] == "histogram", name


def test_the_name_check_catches_a_made_up_name(daemon, tmp_path, monkeypatch):
    """The check above is not vacuous: a dashboard with one misspelt name fails it."""
    dash = json.loads(DASHBOARD.read_text())
    dash["panels"][0]["targets"][0]["expr"] = "sum(runfleet_jobs_queuedd)"
    bad = tmp_path / "runfleet.json"
    bad.write_text(json.dumps(dash))
    monkeypatch.setattr(sys.modules[__name__], "DASHBOARD", bad)
    with pytest.raises(AssertionError, match="runfleet_jobs_queuedd"):
        test_every_dashboard_expression_queries_an_exported_metric(daemon)
