"""Settings read once from ``SENSEI_*`` environment variables and validated at startup."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEV_SECRET_KEY = "sensei-development-secret-key-not-for-production"


class ConfigError(Exception):
    """A setting is missing or wrong; the message is one line naming the variable."""


@dataclass(frozen=True)
class Settings:
    ENV: str = "development"
    DATABASE_URL: str = ""
    REDIS_URL: str | None = None
    REDIS_PREFIX: str = "sensei"
    ISSUER: str = "http://127.0.0.1:8000"
    AUDIENCE: str = ""
    KEYS_DIR: str = ""
    SECRET_KEY: str = DEV_SECRET_KEY
    TRUSTED_PROXIES: int = 0
    ACCESS_TOKEN_TTL: int = 3600
    REFRESH_TOKEN_TTL: int = 30 * 24 * 3600
    AUTHORIZATION_CODE_TTL: int = 600
    SESSION_TTL: int = 12 * 3600
    DOCS_URL: str = "https://docs.sensei.ai"
    SQLITE_SINGLE_HOST: bool = False
    # Benchmarks only: responses report their database and Redis round trips (bench/run.py).
    BENCH_ROUND_TRIPS: bool = False
    # Calls without valid credentials, counted per client address (default: the Free tier).
    ANONYMOUS_PER_SECOND: int = 10
    ANONYMOUS_PER_DAY: int = 1000
    # Sign-in attempts, counted before the (deliberately slow) password check.
    LOGIN_PER_MINUTE_PER_ADDRESS: int = 10
    LOGIN_PER_MINUTE_PER_ACCOUNT: int = 5
    # GET /metrics for a scraper elsewhere: Authorization: Bearer <this> (loopback needs none).
    METRICS_TOKEN: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def production(self) -> bool:
        return self.ENV == "production"


_INT_LIMITS = {
    "TRUSTED_PROXIES": (0, 10),
    "ACCESS_TOKEN_TTL": (60, 24 * 3600),
    "REFRESH_TOKEN_TTL": (300, 365 * 24 * 3600),
    "AUTHORIZATION_CODE_TTL": (10, 600),
    "SESSION_TTL": (300, 30 * 24 * 3600),
    "ANONYMOUS_PER_SECOND": (1, 1_000_000),
    "ANONYMOUS_PER_DAY": (1, 1_000_000_000),
    "LOGIN_PER_MINUTE_PER_ADDRESS": (1, 1_000_000),
    "LOGIN_PER_MINUTE_PER_ACCOUNT": (1, 1_000_000),
}


def load_settings(overrides: Mapping[str, Any] | None = None) -> Settings:
    """Read ``SENSEI_<NAME>`` for every setting, apply ``overrides`` and validate."""
    values: dict[str, Any] = {}
    for f in fields(Settings):
        if f.name == "extra":
            continue
        raw = os.environ.get(f"SENSEI_{f.name}")
        if raw is not None and raw != "":
            values[f.name] = _coerce(f.name, raw)
    for name, value in (overrides or {}).items():
        if name in Settings.__dataclass_fields__ and name != "extra":
            values[name] = _coerce(name, value) if isinstance(value, str) else value
    settings = Settings(**values)
    if not settings.DATABASE_URL:
        instance = PROJECT_ROOT / "instance"
        settings = replace(settings, DATABASE_URL=f"sqlite:///{instance / 'sensei.db'}")
    if not settings.KEYS_DIR:
        settings = replace(settings, KEYS_DIR=str(PROJECT_ROOT / "keys"))
    if not settings.AUDIENCE:
        settings = replace(settings, AUDIENCE=settings.ISSUER)
    _validate(settings)
    return settings


def _coerce(name: str, raw: str) -> Any:
    if name in _INT_LIMITS:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"SENSEI_{name} must be an integer, got {raw!r}") from None
        low, high = _INT_LIMITS[name]
        if not low <= value <= high:
            raise ConfigError(f"SENSEI_{name} must be between {low} and {high}, got {value}")
        return value
    if name in ("SQLITE_SINGLE_HOST", "BENCH_ROUND_TRIPS"):
        return raw.strip().lower() in {"1", "true", "yes"}
    return raw.strip()


def _validate(settings: Settings) -> None:
    if settings.ENV not in {"development", "production"}:
        raise ConfigError(f"SENSEI_ENV must be 'development' or 'production', got {settings.ENV!r}")
    if settings.METRICS_TOKEN and len(settings.METRICS_TOKEN) < 16:
        raise ConfigError("SENSEI_METRICS_TOKEN must be at least 16 characters (a random string)")
    for name in ("ISSUER", "DOCS_URL"):
        value = getattr(settings, name)
        if not value.startswith(("http://", "https://")) or value.endswith("/"):
            raise ConfigError(f"SENSEI_{name} must be an http(s) URL without a trailing slash")
    if not settings.DATABASE_URL.startswith(("sqlite:", "postgresql")):
        raise ConfigError("SENSEI_DATABASE_URL must be a sqlite:/// or postgresql+psycopg:// URL")
    if not settings.production:
        return
    if settings.SECRET_KEY == DEV_SECRET_KEY or len(settings.SECRET_KEY) < 32:
        raise ConfigError(
            "SENSEI_SECRET_KEY must be set to a random value of at least 32 characters in production"
        )
    if not settings.ISSUER.startswith("https://"):
        raise ConfigError("SENSEI_ISSUER must be an https:// URL in production")
    if settings.DATABASE_URL.startswith("sqlite:") and not settings.SQLITE_SINGLE_HOST:
        raise ConfigError(
            "SENSEI_DATABASE_URL is SQLite, which cannot be shared by several hosts: use PostgreSQL "
            "in production, or set SENSEI_SQLITE_SINGLE_HOST=1 to confirm a single host"
        )
