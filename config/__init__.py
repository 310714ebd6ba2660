"""Clarion configuration: one typed settings object (see settings.py)."""

from config.settings import (
    AppSettings,
    ConfigError,
    Settings,
    load_settings,
    settings_to_env,
)

__all__ = ["AppSettings", "ConfigError", "Settings", "load_settings", "settings_to_env"]
