"""Settings: the defaults file, then a config file, then FLOWSTAGE_* environment variables, then
CLI flags; an unknown key or a wrong type stops start-up with a message naming it."""

from __future__ import annotations

import tomllib
from pathlib import Path

import msgspec
import pytest

from flowstage.config import DEFAULTS_FILE, Settings, SettingsError, load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "flowstage.toml"
    path.write_text(text)
    return path


def test_the_defaults_file_loads_and_agrees_with_the_settings_type() -> None:
    settings = load_settings()
    assert (settings.host, settings.port, settings.storage) == ("127.0.0.1", 8080, "sqlite")
    assert settings.cors_origins == ["*"]
    assert settings.max_request_bytes == 10 * 1024 * 1024
    assert settings.max_upload_bytes == 100 * 1024 * 1024
    assert settings.failure_rates == {}
    # Every setting is written down in the defaults file, so an operator can find it there.
    with DEFAULTS_FILE.open("rb") as f:
        assert set(tomllib.load(f)) == set(Settings.__struct_fields__)


def test_the_defaults_file_is_the_one_source_of_default_values() -> None:
    # No field of Settings carries a default: a value could otherwise differ from the file's.
    assert [f.name for f in msgspec.structs.fields(Settings) if not f.required] == []
    with pytest.raises(msgspec.ValidationError, match="missing required field"):
        msgspec.convert({"host": "127.0.0.1"}, Settings)


def test_the_environment_outside_the_prefix_is_ignored() -> None:
    assert load_settings(environ={"PORT": "1", "HOME": "/root", "flowstage_port": "2"}) == load_settings()


def test_a_config_file_overrides_the_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, 'port = 9001\nstorage = "memory"\nfailure_rates = { http_request = 0.25 }\n')
    settings = load_settings(path)
    assert (settings.port, settings.storage) == (9001, "memory")
    assert settings.failure_rates == {"http_request": 0.25}
    assert settings.host == "127.0.0.1"


def test_the_environment_overrides_the_config_file(tmp_path: Path) -> None:
    path = write(tmp_path, "port = 9001\nspeed = 3.0\n")
    settings = load_settings(path, {"FLOWSTAGE_PORT": "9002", "FLOWSTAGE_SEED_DEMO_DATA": "false"})
    assert settings.port == 9002
    assert settings.seed_demo_data is False
    assert settings.speed == 3.0


def test_cli_flags_override_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "port = 9001\n")
    settings = load_settings(
        path, {"FLOWSTAGE_PORT": "9002", "FLOWSTAGE_HOST": "0.0.0.0"},
        {"port": 9003, "host": None, "data_dir": str(tmp_path)},
    )
    assert settings.port == 9003
    # A flag that was not given (None) leaves the lower layers alone.
    assert settings.host == "0.0.0.0"
    assert settings.data_dir == str(tmp_path)


def test_an_unknown_key_in_a_config_file_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "prot = 9001\n")
    with pytest.raises(SettingsError) as info:
        load_settings(path)
    assert "prot" in str(info.value)
    assert str(path) in str(info.value)


def test_an_unknown_environment_variable_is_named() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(environ={"FLOWSTAGE_PROT": "9001"})
    assert "FLOWSTAGE_PROT" in str(info.value)
    assert "environment" in str(info.value)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('port = "high"\n', "port"),
        ("port = 70000\n", "port"),
        ('storage = "mysql"\n', "storage"),
        ("speed = 0\n", "speed"),
        ('cors_origins = "*"\n', "cors_origins"),
        ("failure_rates = { http_request = 2 }\n", "failure_rates"),
        ("max_request_bytes = 10\n", "max_request_bytes"),
    ],
)
def test_a_wrong_type_or_value_in_a_config_file_is_named(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SettingsError) as info:
        load_settings(path)
    assert key in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FLOWSTAGE_PORT", "abc"),
        ("FLOWSTAGE_SPEED", "fast"),
        ("FLOWSTAGE_SEED_DEMO_DATA", "perhaps"),
        ("FLOWSTAGE_FAILURE_RATES", "http_request=0.5"),
        ("FLOWSTAGE_FAILURE_RATES", '{"http_request": "high"}'),
    ],
)
def test_a_wrong_type_in_the_environment_is_a_settings_error(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(environ={name: value})
    message = str(info.value)
    assert "environment" in message
    assert name.removeprefix("FLOWSTAGE_").lower() in message.lower()


def test_a_wrong_type_from_the_cli_is_a_settings_error() -> None:
    with pytest.raises(SettingsError, match="command line"):
        load_settings(overrides={"port": -1})


@pytest.mark.parametrize(
    "value",
    [
        "http://a.example,http://b.example",
        " http://a.example , http://b.example ,",
        '["http://a.example", "http://b.example"]',
    ],
)
def test_a_list_setting_from_the_environment_takes_commas_or_json(value: str) -> None:
    settings = load_settings(environ={"FLOWSTAGE_CORS_ORIGINS": value})
    assert settings.cors_origins == ["http://a.example", "http://b.example"]


def test_a_single_origin_from_the_environment_is_a_list_of_one() -> None:
    assert load_settings(environ={"FLOWSTAGE_CORS_ORIGINS": "*"}).cors_origins == ["*"]


def test_a_table_setting_from_the_environment_is_json() -> None:
    settings = load_settings(environ={"FLOWSTAGE_FAILURE_RATES": '{"http_request": 0.1}'})
    assert settings.failure_rates == {"http_request": 0.1}


def test_a_missing_config_file_is_a_settings_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(SettingsError) as info:
        load_settings(missing)
    assert str(missing) in str(info.value)


def test_a_malformed_config_file_is_a_settings_error(tmp_path: Path) -> None:
    path = write(tmp_path, "port = = 1\n")
    with pytest.raises(SettingsError) as info:
        load_settings(path)
    assert str(path) in str(info.value)


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]
    assert msgspec.structs.replace(settings, port=1).port == 1
