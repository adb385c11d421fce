"""The wheel as users get it: built from the checkout's tracked files, installed into a fresh venv
outside the checkout, and run from a directory holding a user's own `config.py`, `server.py`,
`actors/` and `simulation.py` (none of which may shadow Flowstage's modules).

Steps: build the wheel; check it holds one top-level import name, `flowstage`, with every module
and data file; install it; start `flowstage serve` on a free port; wait for /api/health; execute
a demo workflow to completion; stop the server. Then install its `testing` extra and run
examples/pytest-suite from a copy outside the checkout, as a user's suite runs against the
installed plugin. Then install its `postgres` and `redis` extras and run `python -m
flowstage.devcluster` (PostgreSQL and Redis from Debian's packages, which .ci/run installs, and
two workers), executing a demo workflow through it. Leaves nothing in the checkout.

Usage: python3 .ci/wheel_check.py   (exit 0 when all of that worked)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# What a user keeps beside their tests: each would shadow a module of the same name.
SHADOWS = {
    "config.py": "raise ImportError('the user config.py was imported instead of flowstage.config')\n",
    "server.py": "raise ImportError('the user server.py was imported instead of flowstage.server')\n",
    "simulation.py": "raise ImportError('the user simulation.py was imported')\n",
    "actors/__init__.py": "raise ImportError('the user actors/ was imported')\n",
}


def step(message: str) -> None:
    print(f"wheel-check: {message}", flush=True)


def run(*argv: str | Path, cwd: Path | None = None) -> None:
    subprocess.run([str(a) for a in argv], cwd=cwd, check=True)


def copy_tracked_files(dest: Path) -> None:
    """The tracked files as they are in the work tree: building there leaves no build/ or
    egg-info behind in the checkout."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())


def check_contents(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/", 1)[0] for name in names if not name.split("/", 1)[0].endswith(".dist-info")}
    if top != {"flowstage"}:
        sys.exit(f"wheel-check: the wheel's top-level names are {sorted(top)}, not ['flowstage']")
    for package in ("server", "actors", "simulation", "config"):
        for init in (ROOT / package).rglob("__init__.py"):
            module_dir = init.parent.relative_to(ROOT)
            for source in init.parent.glob("*.py"):
                wanted = f"flowstage/{module_dir.as_posix()}/{source.name}"
                if wanted not in names:
                    sys.exit(f"wheel-check: the wheel lacks {wanted}")
    if "flowstage/config/defaults.toml" not in names:
        sys.exit("wheel-check: the wheel lacks flowstage/config/defaults.toml")
    for asset in (ROOT / "server" / "static" / "viewer").iterdir():
        if f"flowstage/server/static/viewer/{asset.name}" not in names:
            sys.exit(f"wheel-check: the wheel lacks the viewer's {asset.name}")
    step(f"{wheel.name}: {len(names)} files, one top-level name: flowstage")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def call(base: str, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def wait_until(what: str, check: Any, seconds: float, proc: subprocess.Popen[bytes]) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"wheel-check: the server exited with {proc.returncode} while waiting for {what}")
        try:
            result = check()
        except OSError:
            result = None
        if result:
            return result
        time.sleep(0.1)
    sys.exit(f"wheel-check: no {what} within {seconds:g} s")


def serve_and_execute(venv: Path, workdir: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWSTAGE_", "PYTHON"))}
    proc = subprocess.Popen([str(venv / "bin" / "flowstage"), "serve", "--port", str(port),
                             "--data-dir", str(workdir / "data")], cwd=workdir, env=env)
    try:
        wait_until("/api/health", lambda: call(base, "GET", "/api/health"), 30, proc)
        step(f"flowstage serve answers on {base} from {workdir}")
        with urllib.request.urlopen(f"{base}/viewer/main.js", timeout=10) as page:
            if b"import" not in page.read():
                sys.exit("wheel-check: GET /viewer/main.js did not answer the viewer's module")
        with urllib.request.urlopen(f"{base}/", timeout=10) as page:
            if b'src="/viewer/main.js"' not in page.read():
                sys.exit("wheel-check: GET / did not answer the viewer's page")
        step("the viewer is served at /")
        execute_demo(base, proc)
    finally:
        stop(proc, "the server")


def execute_demo(base: str, proc: subprocess.Popen[bytes]) -> None:
    """Execute the last demo workflow fast, and wait for it to complete."""
    workflows = call(base, "GET", "/api/workflows")["items"]
    if not workflows:
        sys.exit("wheel-check: no demo workflow was seeded")
    workflow = workflows[-1]
    run = call(base, "POST", f"/api/workflows/{workflow['id']}/execute", {"speed": 1000})

    def finished() -> Any:
        latest = call(base, "GET", f"/api/runs/{run['id']}")
        return latest if latest["state"] not in ("running", "paused") else None

    final = wait_until(f"end of run {run['id']}", finished, 60, proc)
    if final["state"] != "completed":
        sys.exit(f"wheel-check: demo run {run['id']} ended {final['state']}, not completed")
    step(f"demo workflow {workflow['name']!r} ran to completion ({len(final['nodes'])} nodes)")


def stop(proc: subprocess.Popen[bytes], what: str) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        sys.exit(f"wheel-check: {what} did not stop within 30 s of SIGINT")
    if code != 0:
        sys.exit(f"wheel-check: {what} exited with {code} after SIGINT")
    step(f"{what} stopped cleanly")


def run_cluster(venv: Path, wheel: Path, workdir: Path) -> None:
    """The postgres and redis extras, and `python -m flowstage.devcluster` (what `make
    run-cluster` runs) from the installed wheel: two workers on PostgreSQL and Redis."""
    step("installing flowstage[postgres,redis] and starting a cluster of 2 workers")
    run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", f"{wheel}[postgres,redis]")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWSTAGE_", "PYTHON"))}
    proc = subprocess.Popen([str(venv / "bin" / "python"), "-m", "flowstage.devcluster", "--port", str(port),
                             "--data-dir", str(workdir / "cluster-files")], cwd=workdir, env=env)
    try:
        wait_until("/api/health", lambda: call(base, "GET", "/api/health"), 60, proc)
        step(f"the cluster answers on {base}")
        execute_demo(base, proc)
    finally:
        stop(proc, "the cluster")


def run_example_suite(venv: Path, wheel: Path, suite: Path) -> None:
    step("installing flowstage[testing] and running examples/pytest-suite against it")
    run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", f"{wheel}[testing]")
    copy = subprocess.run(["git", "ls-files", "-z", "examples/pytest-suite"], cwd=ROOT, check=True,
                          capture_output=True).stdout
    for name in filter(None, copy.decode().split("\0")):
        target = suite / Path(name).relative_to("examples/pytest-suite")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((ROOT / name).read_bytes())
    for name, text in SHADOWS.items():  # the user's own modules sit beside their tests
        if not (suite / name).exists():
            (suite / name).parent.mkdir(parents=True, exist_ok=True)
            (suite / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWSTAGE_", "PYTHON"))}
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                          cwd=suite, env=env)
    if done.returncode != 0:
        sys.exit(f"wheel-check: examples/pytest-suite failed against the wheel (exit {done.returncode})")
    step("examples/pytest-suite passed against the installed wheel")


def main() -> None:
    before = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, check=True,
                            capture_output=True).stdout
    with tempfile.TemporaryDirectory(prefix="flowstage-wheel-") as tmp:
        tmp_path = Path(tmp)
        source, dist, venv, workdir = (tmp_path / d for d in ("src", "dist", "venv", "work"))
        copy_tracked_files(source)
        step("building the wheel")
        run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", dist, source)
        [wheel] = dist.glob("flowstage-*.whl")
        check_contents(wheel)
        step("installing it into a fresh venv")
        run(sys.executable, "-m", "venv", venv)
        run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", wheel)
        for name, text in SHADOWS.items():
            (workdir / name).parent.mkdir(parents=True, exist_ok=True)
            (workdir / name).write_text(text)
        serve_and_execute(venv, workdir)
        run_example_suite(venv, wheel, tmp_path / "suite")
        run_cluster(venv, wheel, workdir)
    after = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, check=True,
                           capture_output=True).stdout
    if after != before:
        sys.exit(f"wheel-check: the checkout changed:\n{after.decode()}")
    step("ok")


if __name__ == "__main__":
    main()
