"""`flowstage serve`: flags and configuration reach the server, and a bad configuration, a busy
port or a missing event loop stops it with exit status 2 and one line on stderr; serving loads
neither the load tester nor rich. No server is started: `web.run_app` is replaced (it receives
the sockets `serve` bound and the loop `--loop` chose)."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from servers import free_port

from flowstage.server import cli
from flowstage.server.keys import SETTINGS


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every call that would have started a server; a clean FLOWSTAGE_* environment."""
    for name in list(os.environ):
        if name.startswith("FLOWSTAGE_"):
            monkeypatch.delenv(name)
    calls: list[dict[str, Any]] = []

    def fake_run_app(app: web.Application, **kwargs: Any) -> None:
        # `serve` closes its sockets when run_app returns: note where they were bound.
        calls.append({"app": app, "bound": [sock.getsockname()[:2] for sock in kwargs["sock"]],
                      "loop": kwargs["loop"]})

    monkeypatch.setattr(web, "run_app", fake_run_app)  # what server.cli calls
    return calls


def free_ports(count: int) -> list[int]:
    """Ports nothing listens on now (the kernel's picks, released at once)."""
    socks = [socket.socket() for _ in range(count)]
    for sock in socks:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in socks]
    for sock in socks:
        sock.close()
    return ports


@pytest.fixture
def busy_port() -> Iterator[int]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    yield listener.getsockname()[1]
    listener.close()


def test_serve_passes_flags_to_the_server(served: list[dict[str, Any]], tmp_path: Path) -> None:
    [port] = free_ports(1)
    code = cli.main(["serve", "--host", "0.0.0.0", "--port", str(port), "--storage", "memory",
                     "--data-dir", str(tmp_path), "--speed", "4"])
    assert code == 0
    [call] = served
    assert call["bound"] == [("0.0.0.0", port)]
    settings = call["app"][SETTINGS]
    assert (settings.storage, settings.data_dir, settings.speed) == ("memory", str(tmp_path), 4.0)


def test_flags_override_the_environment_and_the_environment_the_file(
    served: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from_file, from_env, from_flag = free_ports(3)
    config = tmp_path / "flowstage.toml"
    config.write_text(f'port = {from_file}\nhost = "127.0.0.1"\nstorage = "memory"\nspeed = 2.0\n')
    monkeypatch.setenv("FLOWSTAGE_PORT", str(from_env))
    monkeypatch.setenv("FLOWSTAGE_SPEED", "3")
    assert cli.main(["serve", "--config", str(config), "--port", str(from_flag)]) == 0
    [call] = served
    assert call["bound"] == [("127.0.0.1", from_flag)]
    assert call["app"][SETTINGS].speed == 3.0


def test_a_busy_port_exits_2_with_one_line_before_touching_the_data_dir(
    served: list[dict[str, Any]], tmp_path: Path, busy_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    assert cli.main(["serve", "--port", str(busy_port), "--data-dir", str(data_dir)]) == 2
    err = capsys.readouterr().err
    assert err == (f"flowstage: port {busy_port} on 127.0.0.1 is already in use; "
                   "choose another with --port\n")
    assert not data_dir.exists()
    assert served == []


def test_an_address_not_on_this_machine_exits_2_naming_it(
    served: list[dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 192.0.2.0/24 is TEST-NET-1: documentation only, never assigned to an interface.
    assert cli.main(["serve", "--host", "192.0.2.1", "--port", "0", "--data-dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flowstage: cannot listen on 192.0.2.1:0 (")
    assert err.endswith("); choose another address with --host\n")
    assert err.count("\n") == 1
    assert not (tmp_path / "d").exists()


def test_a_missing_config_file_exits_2_naming_it(
    served: list[dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.toml"
    assert cli.main(["serve", "--config", str(missing)]) == 2
    err = capsys.readouterr().err
    assert "configuration error" in err
    assert str(missing) in err
    assert served == []


def test_a_config_file_with_an_unknown_key_exits_2_naming_the_key(
    served: list[dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "flowstage.toml"
    config.write_text("prot = 1\n")
    assert cli.main(["serve", "--config", str(config)]) == 2
    assert "prot" in capsys.readouterr().err
    assert served == []


def test_an_unknown_environment_variable_exits_2_naming_it(
    served: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLOWSTAGE_PROT", "9000")
    assert cli.main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "FLOWSTAGE_PROT" in err
    assert "configuration error" in err
    assert served == []


def test_a_bad_environment_value_exits_2(
    served: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLOWSTAGE_PORT", "eighty")
    assert cli.main(["serve"]) == 2
    assert "port" in capsys.readouterr().err
    assert served == []


def test_an_out_of_range_port_flag_exits_2(
    served: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["serve", "--port", "70000"]) == 2
    assert "port" in capsys.readouterr().err
    assert served == []


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["serve", "--port", "abc"], "--port"),
        (["serve", "--storage", "mysql"], "--storage"),
        (["serve", "--bogus"], "--bogus"),
        (["loadtest", "--bogus"], "--bogus"),
        (["loadtest", "--runs", "abc"], "--runs"),
        ([], "serve"),
    ],
)
def test_bad_arguments_exit_2_with_usage(
    served: list[dict[str, Any]], capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: flowstage" in err
    assert says in err
    assert served == []


def test_serve_on_an_unreachable_postgres_exits_2_naming_it_without_its_password(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql://flowstage:s3cret@127.0.0.1:{port}/flowstage"
    done = subprocess.run([sys.executable, "-m", "flowstage", "serve", "--port", "0", "--storage", "postgres",
                           "--database-url", url, "--data-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr.startswith(f"flowstage: PostgreSQL at postgresql://flowstage:***@127.0.0.1:{port}/flowstage "
                                  "is unreachable: ")
    assert done.stderr.count("\n") == 1 and "s3cret" not in done.stderr


def test_storage_postgres_without_a_database_url_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["serve", "--port", "0", "--storage", "postgres"]) == 2
    assert "needs database_url" in capsys.readouterr().err


@pytest.mark.parametrize(("extra", "says"), [
    ([], 'needs storage = "postgres" and bus = "redis"'),
    (["--storage", "postgres", "--database-url", "postgresql://x@127.0.0.1/x", "--bus", "redis",
      "--redis-url", "redis://127.0.0.1:1/0", "--test-mode"], "do not go together"),
])
def test_workers_without_what_they_need_exit_2_before_starting_any(
    served: list[dict[str, Any]], capsys: pytest.CaptureFixture[str], extra: list[str], says: str
) -> None:
    assert cli.main(["serve", "--port", "0", "--workers", "2", *extra]) == 2
    assert says in capsys.readouterr().err
    assert served == []


def test_loadtest_help_lists_its_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["loadtest", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: flowstage loadtest [-h] [--url URL] [--runs N]")
    assert "--loop {asyncio,uvloop}" in out


def test_serve_loads_neither_the_load_tester_nor_rich(tmp_path: Path) -> None:
    # A fresh interpreter: this one has imported both for the other tests.
    script = textwrap.dedent("""
        import sys
        from aiohttp import web
        web.run_app = lambda app, **kwargs: None
        from flowstage.server import cli
        code = cli.main(["serve", "--port", "0", "--storage", "memory", "--data-dir", sys.argv[1]])
        print(code, sorted(m for m in sys.modules if m.split(".")[0] == "rich"
                           or m.startswith("flowstage.loadtest")))
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWSTAGE_")}
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env,
                          capture_output=True, text=True, check=True)
    assert done.stdout == "0 []\n"


# --- `--loop`: the event loop of `serve` (and of `loadtest`, the other half of the comparison) ---


def test_serve_runs_on_aiohttps_default_loop_unless_told(
    served: list[dict[str, Any]], tmp_path: Path
) -> None:
    assert cli.main(["serve", "--port", "0", "--storage", "memory", "--data-dir", str(tmp_path)]) == 0
    assert served[0]["loop"] is None


def test_serve_loop_uvloop_hands_a_uvloop_loop_to_the_server(
    served: list[dict[str, Any]], tmp_path: Path
) -> None:
    uvloop = pytest.importorskip("uvloop")
    assert cli.main(["serve", "--port", "0", "--storage", "memory", "--data-dir", str(tmp_path),
                     "--loop", "uvloop"]) == 0
    loop = served[0]["loop"]
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


@pytest.fixture
def without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    """`import uvloop` fails, as where it is not installed (it is in the dev extra)."""
    monkeypatch.setitem(sys.modules, "uvloop", None)


@pytest.mark.usefixtures("without_uvloop")
def test_serve_loop_uvloop_without_uvloop_exits_2_with_one_line(
    served: list[dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["serve", "--port", "0", "--storage", "memory", "--data-dir", str(tmp_path),
                     "--loop", "uvloop"]) == 2
    assert capsys.readouterr().err == "flowstage: --loop uvloop needs uvloop: pip install 'flowstage[uvloop]'\n"
    assert served == []


@pytest.mark.usefixtures("without_uvloop")
def test_loadtest_loop_uvloop_without_uvloop_exits_2_after_checking_its_options(
    capsys: pytest.CaptureFixture[str]
) -> None:
    # Refused before anything is sent: the URL is never reached.
    assert cli.main(["loadtest", "--url", "http://127.0.0.1:9", "--loop", "uvloop"]) == 2
    assert capsys.readouterr().err == (
        "flowstage loadtest: --loop uvloop needs uvloop: pip install 'flowstage[uvloop]'\n")
    assert cli.main(["loadtest", "--runs", "0", "--loop", "uvloop"]) == 2
    assert capsys.readouterr().err == "flowstage loadtest: --runs must be at least 1\n"


# --- the listening socket ---


def test_connections_a_busy_server_has_not_accepted_yet_wait_in_its_backlog(tmp_path: Path) -> None:
    """A load test opens thousands of connections in one instant. The kernel completes them
    ahead of accept() up to the listen backlog; past it, a connection waits a SYN
    retransmission (1 s, then 3 s...) before its first request. With aiohttp's default backlog
    (128) that stalled such tests by seconds; `serve` listens with 4,096. The server is
    stopped (SIGSTOP) so that it accepts nothing while 1,000 clients connect."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWSTAGE_")}
    server = subprocess.Popen([sys.executable, "-m", "flowstage", "serve", "--port", str(port), "--storage",
                               "memory", "--data-dir", str(tmp_path)], env=env, stderr=subprocess.DEVNULL)
    clients: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 30
        while True:  # until it listens
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "the server did not start"
                time.sleep(0.05)
        server.send_signal(signal.SIGSTOP)
        for _ in range(1000):
            client = socket.socket()
            client.setblocking(False)
            client.connect_ex(("127.0.0.1", port))
            clients.append(client)
        pending = set(clients)
        deadline = time.monotonic() + 0.9  # under the first SYN retransmission (1 s)
        while pending and time.monotonic() < deadline:
            _, writable, _ = select.select([], list(pending)[:512], [], 0.05)
            pending -= set(writable)
        assert not pending, f"{len(pending)} of 1,000 connections were not completed"
        assert all(c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0 for c in clients)
    finally:
        for client in clients:
            client.close()
        server.send_signal(signal.SIGCONT)
        server.terminate()
        server.wait(timeout=30)
