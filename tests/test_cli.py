"""`flowstage serve`: flags and configuration reach the server, and a bad configuration stops
it with exit status 2 and a message on stderr. No server is started: `web.run_app` is replaced."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
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
        calls.append({"app": app, **kwargs})

    monkeypatch.setattr(web, "run_app", fake_run_app)  # what server.cli calls
    return calls


def test_serve_passes_flags_to_the_server(served: list[dict[str, Any]], tmp_path: Path) -> None:
    code = cli.main(["serve", "--host", "0.0.0.0", "--port", "9123", "--storage", "memory",
                     "--data-dir", str(tmp_path), "--speed", "4"])
    assert code == 0
    [call] = served
    assert (call["host"], call["port"]) == ("0.0.0.0", 9123)
    settings = call["app"][SETTINGS]
    assert (settings.storage, settings.data_dir, settings.speed) == ("memory", str(tmp_path), 4.0)


def test_flags_override_the_environment_and_the_environment_the_file(
    served: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "flowstage.toml"
    config.write_text('port = 9001\nhost = "10.0.0.1"\nstorage = "memory"\nspeed = 2.0\n')
    monkeypatch.setenv("FLOWSTAGE_PORT", "9002")
    monkeypatch.setenv("FLOWSTAGE_SPEED", "3")
    assert cli.main(["serve", "--config", str(config), "--port", "9003"]) == 0
    [call] = served
    assert (call["host"], call["port"]) == ("10.0.0.1", 9003)
    assert call["app"][SETTINGS].speed == 3.0


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
        (["serve", "--storage", "postgres"], "--storage"),
        (["serve", "--bogus"], "--bogus"),
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
