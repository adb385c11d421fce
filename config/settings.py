"""Settings: the TOML defaults decoded into one frozen Struct, then overridden by an optional
config file, by `FLOWSTAGE_<KEY>` environment variables and by CLI flags, in that order.

An unknown key or a value of the wrong type is a `SettingsError` naming the key and its source,
so a mistyped setting stops the server at start instead of being ignored.
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

import msgspec
from msgspec import Meta

__all__ = ["DEFAULTS_FILE", "Settings", "SettingsError", "load_settings", "redact_url"]

DEFAULTS_FILE = Path(__file__).with_name("defaults.toml")
ENV_PREFIX = "FLOWSTAGE_"


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Every setting with its type and bounds. No field has a default of its own:
    `defaults.toml` holds the one set of default values, and `load_settings` always starts
    from it (docs/configuration.md's table is tested against both)."""

    host: str
    port: Annotated[int, Meta(ge=0, le=65535)]
    data_dir: str
    storage: Literal["sqlite", "memory", "postgres"]
    database_url: str
    bus: Literal["local", "redis"]
    redis_url: str
    speed: Annotated[float, Meta(gt=0)]
    failure_rates: dict[str, Annotated[float, Meta(ge=0, le=1)]]
    mailbox_size: Annotated[int, Meta(ge=1)]
    cors_origins: list[str]
    max_request_bytes: Annotated[int, Meta(ge=1024)]
    max_upload_bytes: Annotated[int, Meta(ge=1024)]
    rate_limit_per_second: Annotated[float, Meta(ge=0)]
    rate_limit_burst: Annotated[int, Meta(ge=1)]
    seed_demo_data: bool
    log_level: Literal["debug", "info", "warning", "error"]
    # Server-Sent Events (docs/sse.md).
    sse_ping_seconds: Annotated[float, Meta(gt=0)]
    sse_batch_ms: Annotated[float, Meta(ge=0, le=1000)]
    sse_buffer_events: Annotated[int, Meta(ge=1)]
    sse_write_timeout_seconds: Annotated[float, Meta(gt=0)]
    event_ring_size: Annotated[int, Meta(ge=1)]
    # Test mode (docs/testing.md): a virtual clock, scripts, a journal, /__flowstage/*.
    test_mode: bool
    autojump: bool


class SettingsError(Exception):
    """A setting is unknown or has the wrong type; the message says which and where from."""


def _check(raw: Mapping[str, Any], source: str) -> None:
    try:
        msgspec.convert(dict(raw), Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(f"{source}: {exc}") from None


@functools.cache
def _field_types() -> dict[str, msgspec.inspect.Type]:
    info = msgspec.inspect.type_info(Settings)
    assert isinstance(info, msgspec.inspect.StructType)
    return {f.name: f.type for f in info.fields}


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    fields = _field_types()
    out: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX):].lower()
        if key not in fields:
            raise SettingsError(f"environment: unknown setting {name}")
        kind = fields[key]
        if isinstance(kind, (msgspec.inspect.ListType, msgspec.inspect.DictType)):
            # Lists and tables are given as JSON; a bare comma list is accepted for lists.
            try:
                out[key] = msgspec.json.decode(value)
            except msgspec.DecodeError:
                if isinstance(kind, msgspec.inspect.DictType):
                    raise SettingsError(f"environment: {name} must be a JSON object") from None
                out[key] = [part.strip() for part in value.split(",") if part.strip()]
        else:
            out[key] = value
    return out


@functools.cache
def defaults() -> Mapping[str, Any]:
    """defaults.toml, read once per process (test suites build settings once per test); the
    engine's own defaults for the settings it takes come from here too."""
    with DEFAULTS_FILE.open("rb") as f:
        return MappingProxyType(tomllib.load(f))


def load_settings(
    config_file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    overrides_source: str = "command line",
) -> Settings:
    """Defaults, then `config_file`, then the environment, then `overrides` (CLI flags; errors
    in them are said to come from `overrides_source`)."""
    merged: dict[str, Any] = {}
    layers: list[tuple[str, Mapping[str, Any]]] = [(str(DEFAULTS_FILE), defaults())]
    if config_file is not None:
        try:
            with Path(config_file).open("rb") as f:
                layers.append((str(config_file), tomllib.load(f)))
        except OSError as exc:
            raise SettingsError(f"{config_file}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{config_file}: {exc}") from None
    layers.append(("environment", _from_env(environ or {})))
    layers.append((overrides_source, {k: v for k, v in (overrides or {}).items() if v is not None}))
    for source, layer in layers:
        _check({**merged, **layer}, source)
        merged.update(layer)
    settings = msgspec.convert(merged, Settings, strict=False)
    if settings.storage == "postgres" and not settings.database_url:
        raise SettingsError('storage = "postgres" needs database_url (postgresql://user@host:5432/dbname)')
    if settings.bus == "redis" and not settings.redis_url:
        raise SettingsError('bus = "redis" needs redis_url (redis://host:6379/0)')
    if settings.bus == "redis" and settings.storage != "postgres":
        raise SettingsError('bus = "redis" shares runs between processes, which need a store they share: '
                            'storage = "postgres"')
    return settings


def redact_url(url: str) -> str:
    """`url` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[-1]}"))
