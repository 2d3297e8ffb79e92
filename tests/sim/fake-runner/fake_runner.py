#!/usr/bin/env python3
"""A stand-in for actions/runner, for runfleet's tests. Standard library only.

Started like the real runner (`run.sh --jitconfig <encoded>`, work directory =
current directory), it decodes the JIT config, connects to the GitHub
simulator named in `.runner`'s serverUrl, waits for one job whose labels it
satisfies, runs it like actions/runner does, then exits:

* the job-started hook (ACTIONS_RUNNER_HOOK_JOB_STARTED) runs first, with the
  GITHUB_* / RUNNER_* environment the real runner gives hooks; if it fails the
  job fails and its steps are not run;
* the job itself sleeps for the job's duration in $GITHUB_WORKSPACE (and runs
  the job's `command`, if the test gave one, with `bash -e`);
* the job-completed hook (ACTIONS_RUNNER_HOOK_JOB_COMPLETED) always runs last;
* the runner reports name, pid, CUDA_VISIBLE_DEVICES, NVIDIA_VISIBLE_DEVICES,
  times and hook results to the simulator.

Exit codes follow actions/runner (Constants.Runner.ReturnCode): 0 after its
job (or when stopped by SIGTERM/SIGINT), 1 when the JIT config is invalid or
the registration was deleted, 2 when the server stayed unreachable, 5 when
another process already holds this runner's session.
"""

from __future__ import annotations

import base64
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

RUNNER_VERSION = "2.330.0"
EXIT_SUCCESS = 0
EXIT_TERMINATED = 1
EXIT_RETRYABLE = 2
EXIT_SESSION_CONFLICT = 5
GPU_VARS = ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES")
UNREACHABLE_GIVE_UP = float(os.environ.get("RUNFLEET_FAKE_RUNNER_GIVE_UP", "30"))


class Terminated(Exception):
    """SIGTERM/SIGINT arrived before the runner got a job."""


class Deleted(Exception):
    pass


class Conflict(Exception):
    pass


class State:
    phase = "starting"  # starting | idle | job
    stop = threading.Event()
    interrupt = threading.Event()  # stop or cancel: ends the running step
    cancelled = threading.Event()
    signal_name = ""


def log(msg: str) -> None:
    print(time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()) + ": " + msg, flush=True)


def _on_signal(signum, frame):
    State.signal_name = signal.Signals(signum).name
    State.stop.set()
    State.interrupt.set()


# ---------------------------------------------------------------------------
# JIT config
# ---------------------------------------------------------------------------


def _b64json(value: str) -> dict:
    raw = base64.b64decode(value, validate=True)
    return json.loads(raw.decode("utf-8-sig"))


def decode_jit_config(encoded: str) -> tuple[dict, dict, dict]:
    """encoded_jit_config = base64(JSON {".runner": base64(JSON), ".credentials":
    base64(JSON), ".credentials_rsaparams": base64(JSON)})."""
    try:
        files = _b64json(encoded.strip())
        runner = _b64json(files[".runner"])
        creds = _b64json(files[".credentials"])
        rsa = _b64json(files[".credentials_rsaparams"])
        for k in ("agentId", "agentName", "serverUrl", "workFolder"):
            if k not in runner:
                raise KeyError(k)
        if creds.get("scheme") != "OAuth" or "clientId" not in creds.get("data", {}):
            raise KeyError("credentials")
        if "modulus" not in rsa:
            raise KeyError("modulus")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"invalid JIT config: {e!r}") from None
    return runner, creds, rsa


# ---------------------------------------------------------------------------
# talking to the simulator
# ---------------------------------------------------------------------------


class Client:
    def __init__(self, runner: dict, creds: dict, rsa: dict):
        self.base = runner["serverUrl"].rstrip("/") + "/"
        self.ident = {
            "agent_id": runner["agentId"],
            "client_id": creds["data"]["clientId"],
            "modulus": rsa["modulus"],
        }

    def post(self, path: str, body: dict | None = None, timeout: float = 10.0) -> tuple[int, dict | None]:
        data = dict(self.ident)
        data.update(body or {})
        req = urllib.request.Request(
            self.base + path,
            data=json.dumps(data).encode(),
            headers={"Content-Type": "application/json", "User-Agent": f"GitHubActionsRunner/{RUNNER_VERSION}"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
                return resp.status, (json.loads(raw) if raw.strip() else None)
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                obj = json.loads(raw) if raw.strip() else None
            except ValueError:
                obj = {"message": raw.decode("utf-8", "replace")}
            return e.code, obj

    def post_retrying(self, path: str, body: dict | None = None, timeout: float = 10.0,
                      give_up: float = UNREACHABLE_GIVE_UP) -> tuple[int, dict | None]:
        """Retries connection failures and 5xx for up to give_up seconds."""
        deadline = time.time() + give_up
        delay = 0.2
        while True:
            try:
                status, obj = self.post(path, body, timeout)
                if status < 500:
                    return status, obj
                err = f"HTTP {status}"
            except (urllib.error.URLError, OSError) as e:
                err = str(e)
            if time.time() >= deadline:
                raise ConnectionError(f"{path}: {err}")
            log(f"Retrying {path} after error: {err}")
            if State.stop.wait(delay) and path in ("connect", "acquire"):
                raise Terminated()
            delay = min(delay * 2, 2.0)


# ---------------------------------------------------------------------------
# the job
# ---------------------------------------------------------------------------


def _runner_arch() -> str:
    m = platform.machine().lower()
    return {"x86_64": "X64", "amd64": "X64", "aarch64": "ARM64", "arm64": "ARM64", "i386": "X86",
            "i686": "X86"}.get(m, "ARM" if m.startswith("arm") else "X64")


def _runner_os() -> str:
    return {"Linux": "Linux", "Darwin": "macOS", "Windows": "Windows"}.get(platform.system(), "Linux")


class FileCommands:
    """GITHUB_ENV, GITHUB_PATH, GITHUB_OUTPUT, GITHUB_STATE and
    GITHUB_STEP_SUMMARY files, fresh for each step, as the runner makes them."""

    def __init__(self, temp: str):
        self.dir = os.path.join(temp, "_runner_file_commands")
        os.makedirs(self.dir, exist_ok=True)
        sfx = str(uuid.uuid4())
        self.files = {
            "GITHUB_ENV": os.path.join(self.dir, f"set_env_{sfx}"),
            "GITHUB_PATH": os.path.join(self.dir, f"add_path_{sfx}"),
            "GITHUB_OUTPUT": os.path.join(self.dir, f"set_output_{sfx}"),
            "GITHUB_STATE": os.path.join(self.dir, f"save_state_{sfx}"),
            "GITHUB_STEP_SUMMARY": os.path.join(self.dir, f"step_summary_{sfx}"),
        }
        for p in self.files.values():
            open(p, "w").close()

    def apply(self, env: dict) -> None:
        """Applies what the step wrote to GITHUB_ENV / GITHUB_PATH to env."""
        with open(self.files["GITHUB_ENV"], encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            i += 1
            if not line.strip():
                continue
            if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
                name, delim = line.split("<<", 1)
                value = []
                while i < len(lines) and lines[i] != delim:
                    value.append(lines[i])
                    i += 1
                i += 1
                env[name] = "\n".join(value)
            elif "=" in line:
                name, value = line.split("=", 1)
                env[name] = value
        with open(self.files["GITHUB_PATH"], encoding="utf-8", errors="replace") as f:
            for p in reversed([l.strip() for l in f.read().splitlines() if l.strip()]):
                env["PATH"] = p + os.pathsep + env.get("PATH", "")


def job_environment(runner: dict, job: dict, root: str) -> tuple[dict, dict]:
    """The environment actions/runner gives steps and hooks, and the dirs."""
    work = runner["workFolder"]
    if not os.path.isabs(work):
        work = os.path.join(root, work)
    repo_name = job["repository"].split("/", 1)[1]
    dirs = {
        "work": work,
        "runner_workspace": os.path.join(work, repo_name),
        "workspace": os.path.join(work, repo_name, repo_name),
        "temp": os.path.join(work, "_temp"),
        "tool": os.path.join(work, "_tool"),
    }
    if os.path.isdir(dirs["temp"]):  # the runner empties _temp before each job
        shutil.rmtree(dirs["temp"], ignore_errors=True)
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)
    event_dir = os.path.join(dirs["temp"], "_github_workflow")
    os.makedirs(event_dir, exist_ok=True)
    event_path = os.path.join(event_dir, "event.json")
    with open(event_path, "w") as f:
        json.dump({"ref": job["ref"], "after": job["sha"],
                   "repository": {"id": job["repository_id"], "full_name": job["repository"]}}, f)
    server = job["server_url"]
    env = dict(os.environ)
    env.update(
        {
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_ACTION": "__run",
            "GITHUB_ACTION_REPOSITORY": "",
            "GITHUB_ACTOR": job["actor"],
            "GITHUB_ACTOR_ID": str(job["actor_id"]),
            "GITHUB_API_URL": job["api_url"],
            "GITHUB_BASE_REF": "",
            "GITHUB_EVENT_NAME": job["event_name"],
            "GITHUB_EVENT_PATH": event_path,
            "GITHUB_GRAPHQL_URL": job["graphql_url"],
            "GITHUB_HEAD_REF": "",
            "GITHUB_JOB": job["job_key"],
            "GITHUB_REF": job["ref"],
            "GITHUB_REF_NAME": job["ref_name"],
            "GITHUB_REF_PROTECTED": "false",
            "GITHUB_REF_TYPE": "branch",
            "GITHUB_REPOSITORY": job["repository"],
            "GITHUB_REPOSITORY_ID": str(job["repository_id"]),
            "GITHUB_REPOSITORY_OWNER": job["repository_owner"],
            "GITHUB_REPOSITORY_OWNER_ID": str(job["repository_owner_id"]),
            "GITHUB_RETENTION_DAYS": "90",
            "GITHUB_RUN_ATTEMPT": str(job["run_attempt"]),
            "GITHUB_RUN_ID": str(job["run_id"]),
            "GITHUB_RUN_NUMBER": str(job["run_number"]),
            "GITHUB_SERVER_URL": server,
            "GITHUB_SHA": job["sha"],
            "GITHUB_TRIGGERING_ACTOR": job["actor"],
            "GITHUB_WORKFLOW": job["workflow"],
            "GITHUB_WORKFLOW_REF": job["workflow_ref"],
            "GITHUB_WORKFLOW_SHA": job["sha"],
            "GITHUB_WORKSPACE": dirs["workspace"],
            "RUNNER_ARCH": _runner_arch(),
            "RUNNER_ENVIRONMENT": "self-hosted",
            "RUNNER_NAME": runner["agentName"],
            "RUNNER_OS": _runner_os(),
            "RUNNER_TEMP": dirs["temp"],
            "RUNNER_TOOL_CACHE": dirs["tool"],
            "RUNNER_TRACKING_ID": f"github_{uuid.uuid4()}",
            "RUNNER_WORKSPACE": dirs["runner_workspace"],
        }
    )
    return env, dirs


def _run_interruptible(argv: list[str], env: dict, cwd: str) -> int:
    proc = subprocess.Popen(argv, env=env, cwd=cwd, start_new_session=True)
    while True:
        try:
            return proc.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            if State.interrupt.is_set():
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    return proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    return proc.wait()


def run_hook(kind: str, path: str, env: dict, cwd: str) -> dict:
    """Runs a job hook the way actions/runner does (JobHookProvider): the
    file must exist and end in .sh (run with `bash -e`) or .ps1."""
    result = {"path": path, "ran": False, "exit_code": None, "error": None}
    log(f"A job {kind} hook has been configured by the self-hosted runner administrator")
    if not os.path.isfile(path):
        result["error"] = "File doesn't exist"
        return result
    ext = os.path.splitext(path)[1]
    if ext == ".sh":
        shell = shutil.which("bash", path=env.get("PATH")) or shutil.which("sh", path=env.get("PATH"))
        argv = [shell, "-e", path]
    elif ext == ".ps1":
        shell = shutil.which("pwsh", path=env.get("PATH"))
        if shell is None:
            result["error"] = "pwsh not found"
            return result
        argv = [shell, "-command", f". '{path}'"]
    else:
        result["error"] = f"{path} is not a valid path to a script. Make sure it ends in '.sh' or '.ps1'."
        return result
    fc = FileCommands(env["RUNNER_TEMP"])
    hook_env = dict(env)
    hook_env.update(fc.files)
    result["ran"] = True
    result["started_at"] = time.time()
    result["exit_code"] = _run_interruptible(argv, hook_env, cwd)
    result["finished_at"] = time.time()
    fc.apply(env)
    return result


def heartbeat(client: Client, job_id: int, interval: float, done: threading.Event) -> None:
    while not done.wait(interval):
        try:
            status, obj = client.post(f"jobs/{job_id}/heartbeat", timeout=5)
        except (urllib.error.URLError, OSError):
            continue
        if status == 200 and obj and obj.get("cancel"):
            if not State.cancelled.is_set():
                log("The job has been cancelled")
            State.cancelled.set()
            State.interrupt.set()


def run_job(client: Client, runner: dict, job: dict) -> str:
    root = os.getcwd()
    env, dirs = job_environment(runner, job, root)
    log(f"Running job: {job['job_name']}")
    report = {
        "runner_name": runner["agentName"],
        "pid": os.getpid(),
        # the runner process's own values ("" when unset; env_set tells which)
        "env": {k: os.environ.get(k, "") for k in GPU_VARS},
        "env_set": {k: k in os.environ for k in GPU_VARS},
        "work_dir": root,
        "workspace": dirs["workspace"],
        "started_at": time.time(),
        "hooks": {"started": None, "completed": None},
        "steps_ran": False,
    }
    client.post_retrying(f"jobs/{job['job_id']}/started", {"report": report})
    done = threading.Event()
    hb = threading.Thread(target=heartbeat, args=(client, job["job_id"], float(job["heartbeat_interval"]), done),
                          daemon=True)
    hb.start()

    conclusion = "success"
    started_hook = os.environ.get("ACTIONS_RUNNER_HOOK_JOB_STARTED")
    if started_hook and not State.stop.is_set():
        r = run_hook("started", started_hook, env, dirs["workspace"])
        report["hooks"]["started"] = r
        if r["exit_code"] != 0:
            log(f"##[error]Job started hook failed: {r['error'] or 'exit code %s' % r['exit_code']}")
            conclusion = "failure"
    if conclusion == "success" and not State.interrupt.is_set():
        report["steps_ran"] = True
        report["step_started_at"] = time.time()
        if job.get("command"):
            fc = FileCommands(dirs["temp"])
            step_env = dict(env)
            step_env.update(fc.files)
            rc = _run_interruptible([shutil.which("bash") or "/bin/bash", "-e", "-c", job["command"]], step_env,
                                    dirs["workspace"])
            report["command_exit_code"] = rc
            if rc != 0:
                conclusion = "failure"
        deadline = report["step_started_at"] + float(job["duration"])
        while conclusion == "success" and not State.interrupt.is_set():
            left = deadline - time.time()
            if left <= 0:
                break
            State.interrupt.wait(min(left, 0.1))
        report["step_finished_at"] = time.time()
        if conclusion == "success":
            conclusion = job["outcome"]
    if State.cancelled.is_set():
        conclusion = "cancelled"
    elif State.stop.is_set():
        log("##[error]The runner has received a shutdown signal. This can happen when the runner service is "
            "stopped, or a manually started runner is canceled.")
        conclusion = "failure"
    completed_hook = os.environ.get("ACTIONS_RUNNER_HOOK_JOB_COMPLETED")
    if completed_hook and not State.stop.is_set():
        was_interrupted = State.interrupt.is_set()
        State.interrupt.clear()  # the completed hook runs even after cancellation
        if State.stop.is_set():
            State.interrupt.set()  # ...but not past a shutdown signal
        r = run_hook("completed", completed_hook, env, dirs["workspace"])
        report["hooks"]["completed"] = r
        if was_interrupted:
            State.interrupt.set()
        if r["exit_code"] != 0 and conclusion == "success":
            log(f"##[error]Job completed hook failed: {r['error'] or 'exit code %s' % r['exit_code']}")
            conclusion = "failure"
    report["finished_at"] = time.time()
    report["conclusion"] = conclusion
    report["job_env"] = {k: env.get(k, "") for k in GPU_VARS}  # after GITHUB_ENV from the hooks
    done.set()
    client.post_retrying(f"jobs/{job['job_id']}/complete", {"conclusion": conclusion, "report": report},
                         give_up=5 if State.stop.is_set() else UNREACHABLE_GIVE_UP)
    result = {"success": "Succeeded", "failure": "Failed", "cancelled": "Canceled"}.get(conclusion, conclusion)
    log(f"Job {job['job_name']} completed with result: {result}")
    return conclusion


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------


def parse_args(argv: list[str]) -> str | None:
    jit = None
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--jitconfig" and i + 1 < len(argv):
            jit = argv[i + 1]
            i += 2
            continue
        if a.startswith("--jitconfig="):
            jit = a.split("=", 1)[1]
        else:
            log(f"Unrecognized command-line input arguments: '{a}'")
        i += 1
    return jit


def listen(client: Client, pid: int) -> dict:
    if State.stop.is_set():
        raise Terminated()
    status, obj = client.post_retrying("connect", {"pid": pid, "version": RUNNER_VERSION})
    if status == 404:
        raise Deleted((obj or {}).get("message", ""))
    if status == 409:
        raise Conflict((obj or {}).get("message", ""))
    if status != 200:
        raise Deleted(f"HTTP {status}: {(obj or {}).get('message', '')}")
    log("√ Connected to GitHub")
    log(f"Current runner version: '{RUNNER_VERSION}'")
    log("Listening for Jobs")
    State.phase = "idle"
    while True:
        # The long poll runs in a thread so that a signal is handled at once:
        # the main thread tells the server we are leaving, which ends the
        # poll; a job assigned in that instant is still taken (and failed).
        result: dict = {}

        def poll():
            try:
                result["r"] = client.post_retrying("acquire", {"wait": 10}, timeout=40)
            except BaseException as e:  # noqa: BLE001 - handed to the main thread
                result["e"] = e

        t = threading.Thread(target=poll, daemon=True)
        t.start()
        while t.is_alive():
            if State.stop.wait(0.05):
                try:
                    client.post("disconnect", timeout=2)
                except (urllib.error.URLError, OSError):
                    pass
                t.join(5)
                break
        if "e" in result:
            raise result["e"]
        status, obj = result.get("r", (0, None))
        if status == 200 and obj and obj.get("job"):
            State.phase = "job"
            return obj["job"]
        if State.stop.is_set():
            raise Terminated()
        if status == 404:
            raise Deleted((obj or {}).get("message", ""))
        if status not in (200, 204):
            raise Deleted(f"HTTP {status}: {(obj or {}).get('message', '')}")


def record_runner_token() -> None:
    """Appends the hook token runfleetd gave this runner to the file named
    by RUNFLEET_FAKE_RUNNER_TOKEN_LOG, for tests that check it never leaks."""
    path = os.environ.get("RUNFLEET_FAKE_RUNNER_TOKEN_LOG")
    token = os.environ.get("RUNFLEET_RUNNER_TOKEN")
    if path and token:
        with open(path, "a") as f:
            f.write(token + "\n")


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    record_runner_token()
    client = None
    try:
        encoded = parse_args(argv)
        if not encoded:
            log("##[error]--jitconfig is required")
            return EXIT_TERMINATED
        try:
            runner, creds, rsa = decode_jit_config(encoded)
        except ValueError as e:
            log(f"##[error]{e}")
            return EXIT_TERMINATED
        client = Client(runner, creds, rsa)
        try:
            job = listen(client, os.getpid())
        except Deleted as e:
            log("Failed to create a session. The runner registration has been deleted from the server, "
                f"please re-configure. {e}")
            return EXIT_TERMINATED
        except Conflict as e:
            log(f"A session for this runner already exists. {e}")
            return EXIT_SESSION_CONFLICT
        except ConnectionError as e:
            log(f"##[error]GitHub is unreachable: {e}")
            return EXIT_RETRYABLE
        run_job(client, runner, job)
        return EXIT_SUCCESS
    except Terminated:
        log(f"Runner listener exit because of {State.signal_name or 'a signal'}")
        return EXIT_SUCCESS


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
