"""The config: the file's schema (`schema`), what it resolves to (`settings`), and loading."""

from proxy.config.load import default_settings, load_settings, settings_from_mapping
from proxy.config.schema import parse_duration, parse_size
from proxy.config.settings import (
    DEFAULT_PORT,
    CacheSettings,
    ConfigError,
    Credential,
    GatewayKey,
    HealthCheck,
    ModelRoute,
    Provider,
    RetryPolicy,
    Rule,
    Settings,
    Target,
)

__all__ = [
    "DEFAULT_PORT",
    "CacheSettings",
    "ConfigError",
    "Credential",
    "GatewayKey",
    "HealthCheck",
    "ModelRoute",
    "Provider",
    "RetryPolicy",
    "Rule",
    "Settings",
    "Target",
    "default_settings",
    "load_settings",
    "parse_duration",
    "parse_size",
    "settings_from_mapping",
]
