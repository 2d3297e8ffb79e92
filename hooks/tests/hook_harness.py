"""Helpers for the runfleet-hook system tests (tests/test_hooks_*.py):
a runner-like directory layout and environment, running the hook shims the
way actions/runner does (bash -e, own session), a git smart-HTTP server on
127.0.0.1 that counts the bytes it sends, and a stand-in for runfleetd's
hook API. Standard library only."""

from __future__ import annotations

import base64
import http.server
import json
import os
import socketserver
import subprocess
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SANITIZER_MARKERS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error:",
    "SUMMARY: UndefinedBehaviorSanitizer",
)


def bin_dir() -> Path:
    env = os.environ.get("RUNFLEET_BIN_DIR")
    return Path(env) if env else ROOT / "build" / "asan" / "bin"


def fake_nvml() -> Path:
    return bin_dir().parent / "lib" / "libnvml_fake.so"


class Runner:
    """The directories and environment actions/runner gives a hook."""

    def __init__(self, base: Path, repo: str = "octo/big"):
        self.base = base
        self.work = base / "_work"
        name = repo.split("/", 1)[1]
        self.runner_workspace = self.work / name
        self.workspace = self.runner_workspace / name
        self.temp = self.work / "_temp"
        self.file_commands = self.temp / "_runner_file_commands"
        for d in (self.workspace, self.file_commands):
            d.mkdir(parents=True, exist_ok=True)
        self.github_env = self.file_commands / "set_env_hook"
        self.github_env.write_text("")
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(base),
            "GITHUB_WORKSPACE": str(self.workspace),
            "RUNNER_WORKSPACE": str(self.runner_workspace),
            "RUNNER_TEMP": str(self.temp),
            "GITHUB_ENV": str(self.github_env),
            "GITHUB_REPOSITORY": repo,
            "GITHUB_RUN_ID": "4242",
            "GITHUB_JOB": "build",
            "RUNNER_TRACKING_ID": "github_" + base.name,
            "RUNFLEET_RUNNER_NAME": "cpu-1-x",
            "RUNFLEET_POOL": "cpu-1",
            "RUNFLEET_NODE_NAME": "node-a",
            "RUNFLEET_CACHE_DIR": str(base / "cache"),
            "RUNFLEET_NVML_LIB": str(base / "no-nvml.so"),
            "RUNFLEET_GIT_CACHE": "0",
            "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0",
            "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
        }

    def alternates(self) -> list[str]:
        return [
            line.split("=", 1)[1]
            for line in self.github_env.read_text().splitlines()
            if line.startswith("GIT_ALTERNATE_OBJECT_DIRECTORIES=")
        ]

    def run(self, phase: str, extra: dict | None = None, timeout: float = 120,
            shell_prefix: str | None = None) -> subprocess.CompletedProcess:
        """Runs hooks/<phase>.sh with bash -e in its own session, from the
        workspace, as the runner does."""
        env = dict(self.env)
        env.update(extra or {})
        shim = str(bin_dir() / f"{phase}.sh")
        if shell_prefix is None:
            argv = ["bash", "-e", shim]
        else:
            argv = ["bash", "-c", f"{shell_prefix}; exec bash -e {shim}"]
        p = subprocess.run(argv, env=env, cwd=str(self.workspace), capture_output=True,
                           text=True, timeout=timeout, start_new_session=True)
        out = p.stdout + p.stderr
        for marker in SANITIZER_MARKERS:
            assert marker not in out, out
        return p


def git(*args: str, cwd: Path | None = None, env: dict | None = None) -> str:
    e = dict(os.environ)
    e.update({"GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
              "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"})
    e.update(env or {})
    return subprocess.run(["git", *args], cwd=cwd, env=e, check=True, capture_output=True,
                          text=True).stdout


class _Threading(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class GitServer:
    """git http-backend behind a tiny server on 127.0.0.1; counts response
    bytes, and optionally requires HTTP basic auth x-access-token:TOKEN."""

    def __init__(self, project_root: Path, token: str | None = None):
        self.project_root = project_root
        self.token = token
        self.bytes_sent = 0
        self.requests: list[tuple[str, str, str]] = []  # method, path, auth header
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *a):
                pass

            def do_GET(self):
                self._cgi()

            def do_POST(self):
                self._cgi()

            def _cgi(self):
                auth = self.headers.get("Authorization", "")
                with server.lock:
                    server.requests.append((self.command, self.path, auth))
                if server.token is not None:
                    want = "Basic " + base64.b64encode(f"x-access-token:{server.token}".encode()).decode()
                    if auth != want:
                        self.send_response(401)
                        self.send_header("WWW-Authenticate", 'Basic realm="git"')
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                path, _, query = self.path.partition("?")
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                env = {
                    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "GIT_PROJECT_ROOT": str(server.project_root),
                    "GIT_HTTP_EXPORT_ALL": "1",
                    "GIT_CONFIG_NOSYSTEM": "1",
                    "REQUEST_METHOD": self.command,
                    "PATH_INFO": path,
                    "QUERY_STRING": query,
                    "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                    "CONTENT_LENGTH": str(len(body)),
                    "REMOTE_ADDR": "127.0.0.1",
                }
                if self.headers.get("Content-Encoding"):
                    env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
                if self.headers.get("Git-Protocol"):
                    env["HTTP_GIT_PROTOCOL"] = self.headers["Git-Protocol"]
                p = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True)
                head, _, payload = p.stdout.partition(b"\r\n\r\n")
                status = 200
                headers = []
                for line in head.split(b"\r\n"):
                    k, _, v = line.decode("latin-1").partition(":")
                    if k.lower() == "status":
                        status = int(v.strip().split()[0])
                    elif k:
                        headers.append((k, v.strip()))
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                with server.lock:
                    server.bytes_sent += len(payload)

        self.httpd = _Threading(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def take_bytes(self) -> int:
        with self.lock:
            n, self.bytes_sent = self.bytes_sent, 0
            return n

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class FakeRunfleetd:
    """Records POST /api/v1/hooks/{started,completed} and answers 204, or
    401 when the bearer token is not the expected one."""

    def __init__(self, token: str):
        self.token = token
        self.reports: list[tuple[str, dict, dict]] = []  # path, headers, body
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"_raw": raw.decode("utf-8", "replace")}
                with server.lock:
                    server.reports.append((self.path, dict(self.headers), body))
                ok = self.headers.get("Authorization") == f"Bearer {server.token}"
                self.send_response(204 if ok else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = _Threading(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
