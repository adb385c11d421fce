"""Configuration: defaults in TOML, decoded into a frozen Settings Struct."""

from flowstage.config.settings import DEFAULTS_FILE, Settings, SettingsError, defaults, load_settings

__all__ = ["DEFAULTS_FILE", "Settings", "SettingsError", "defaults", "load_settings"]
