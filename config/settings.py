"""Typed settings for every process: `DIA_*` environment variables first, then a `.env` file.

Each entry point builds its settings once with `load_settings` and passes them down; importing this module
reads nothing. Every problem becomes a `SettingsError` whose message is one line that names the setting as
the environment variable a user sets, and says how to fix it, so no entry point ever shows a traceback for
a configuration mistake. Layout follows python-discord/bot's pydantic-settings models, without its
import-time singletons.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from dotenv import dotenv_values
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "DIA_"
DEFAULT_ENV_FILE = Path(".env")
DEFAULT_DISCORD_API_BASE = "https://discord.com/api/v10"
DEFAULT_DISCORD_GATEWAY_URL = "wss://gateway.discord.gg"
DEFAULT_MODEL = "nari-labs/Dia-1.6B-0626"
DEFAULT_CODEC = "descript/dac_44khz"

_TOKEN_HINT = (
    "create an application at https://discord.com/developers/applications, open its Bot page, "
    "press Reset Token and put the token in .env as DIA_DISCORD_TOKEN=..."
)
# A bot token is three base64url parts joined by dots; a client secret or an application id is not.
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{10,}")
_DEVICE_RE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


class SettingsError(Exception):
    """A setting is missing or invalid; `str()` is one line naming the setting and the fix."""


def env_name(field: str) -> str:
    """The environment variable that sets `field`, e.g. `discord_token` -> `DIA_DISCORD_TOKEN`."""
    return ENV_PREFIX + field.upper()


class CommonSettings(BaseSettings):
    """Settings every process reads."""

    # Empty values (`DIA_REDIS_URL=` in a copied example.env) mean "not set", not "set to the empty string".
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True, env_ignore_empty=True)
    hints: ClassVar[dict[str, str]] = {}

    redis_url: str | None = Field(None, description="Redis URL; unset means `make run` starts an embedded Redis")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix:// (e.g. redis://localhost:6379/0)")
        return value

    def require_redis_url(self) -> str:
        """The Redis URL, or a `SettingsError` telling how to get one when this process runs alone."""
        if self.redis_url is None:
            raise SettingsError(
                f"{env_name('redis_url')} is not set: point it at your Redis (e.g. redis://localhost:6379/0), "
                "or start everything with `make run`, which starts an embedded Redis"
            )
        return self.redis_url


class BotSettings(CommonSettings):
    """Settings of the Discord process (`python -m bot`)."""

    hints: ClassVar[dict[str, str]] = {"discord_token": _TOKEN_HINT}

    discord_token: SecretStr
    dev_guild_id: int | None = Field(None, gt=0, description="guild where slash commands sync instantly")
    # Overridable only to test against a local emulator (tests/fakediscord); a real bot never changes these.
    discord_api_base: str = DEFAULT_DISCORD_API_BASE
    discord_gateway_url: str = DEFAULT_DISCORD_GATEWAY_URL
    discord_voice_tls_verify: bool = True
    guild_queue_cap: int = Field(20, ge=1, description="unfinished lines one server may have queued")
    rate_burst: int = Field(5, ge=1, description="lines one user may send at once")
    rate_per_minute: float = Field(12.0, gt=0, description="lines one user may send per minute, sustained")
    required_role: str | None = Field(None, description="role name or id that users need to use the bot")
    max_say_chars: int = Field(2000, ge=10, le=6000, description="longest text one /say may speak")
    max_line_seconds: float = Field(30.0, gt=0, le=35.0, description="longest audio one rendered segment may last")
    prebuffer_ms: int = Field(200, ge=0, le=5000, description="audio buffered before a line starts playing")
    idle_timeout: float = Field(300.0, gt=0, description="seconds without lines before the bot leaves voice")
    max_characters: int = Field(200, ge=1, le=10_000, description="characters one server may have")
    character_role: str | None = Field(
        None, description="role name or id that may create, change or delete characters (unset: Manage Server)"
    )
    read_messages: bool = Field(
        False, description="let servers pick a channel whose messages are read aloud (needs the Message Content intent)"
    )
    read_note_seconds: float = Field(
        30.0, gt=0, le=86_400, description="how long the read channel's note on a message it did not speak stays"
    )

    @field_validator("discord_token")
    @classmethod
    def _token_shape(cls, value: SecretStr) -> SecretStr:
        if not _TOKEN_RE.fullmatch(value.get_secret_value().strip()):
            raise ValueError(
                "does not look like a bot token (three parts separated by dots); copy it from the Bot page of "
                "your application with Reset Token, not the client secret or the application id"
            )
        return SecretStr(value.get_secret_value().strip())

    @field_validator("discord_api_base")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s):// URL")
        return value.rstrip("/")

    @field_validator("discord_gateway_url")
    @classmethod
    def _ws_url(cls, value: str) -> str:
        if not value.startswith(("wss://", "ws://")):
            raise ValueError("must be a ws(s):// URL")
        return value

    def uses_real_discord(self) -> bool:
        return (
            self.discord_api_base == DEFAULT_DISCORD_API_BASE
            and self.discord_gateway_url == DEFAULT_DISCORD_GATEWAY_URL
            and self.discord_voice_tls_verify
        )


class WorkerSettings(CommonSettings):
    """Settings of a GPU worker (`python -m tts_engine worker`)."""

    model: str = Field(DEFAULT_MODEL, min_length=1, description="hub id or local folder of the Dia checkpoint")
    codec: str = Field(DEFAULT_CODEC, min_length=1, description="hub id or local folder of the 44.1 kHz DAC")
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    reclaim_after: float = Field(15.0, gt=0, description="seconds before a silent worker's job goes to another")
    max_attempts: int = Field(3, ge=1, le=10)
    cache_ttl: float = Field(86_400.0, ge=0, description="seconds a rendered line stays cached (0: none is)")
    cache_max_mb: int = Field(256, ge=0)
    opus_bitrate: int = Field(96_000, ge=6_000, le=510_000)
    opus_complexity: int = Field(10, ge=0, le=10, description="Opus encoder effort: lower saves CPU per line")
    opus_fec: bool = Field(False, description="in-band forward error correction for lossy links (hybrid mode)")
    slots: int | None = Field(None, ge=1, le=64, description="lines one worker renders at once (unset: 16 on a GPU)")
    guild_share: float = Field(0.5, gt=0, le=1, description="share of the slots one server may hold while others wait")
    batch_invariant: bool = Field(
        False, description="a seeded line renders the same bits whatever shares its steps, at some speed"
    )
    dependent_launches: bool = Field(
        True, description="Hopper GPUs: kernels may start while the one before them finishes, where timed faster"
    )
    cpu_threads: int | None = Field(
        None, ge=1, le=1024, description="threads torch computes with on the CPU (unset: one per core)"
    )

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not _DEVICE_RE.fullmatch(value):
            raise ValueError("must be auto, cpu, cuda, cuda:N or mps")
        return value


class RunSettings(CommonSettings):
    """Settings of the one-command launcher (`make run`)."""

    data_dir: Path = Field(Path("data"), description="project-local folder for the embedded Redis's data")


ALL_SETTINGS: tuple[type[CommonSettings], ...] = (BotSettings, WorkerSettings, RunSettings)
_S = TypeVar("_S", bound=CommonSettings)


def load_settings(cls: type[_S], env_file: Path | None = None, **overrides: Any) -> _S:
    """Build `cls` from `overrides`, then the environment, then `env_file`, then the defaults.

    `env_file=None` reads `.env` in the working folder when there is one; a file given explicitly must exist.
    Raises `SettingsError` (one line) on a missing or invalid value, or on a `DIA_*` name that no setting
    has, since a typo would otherwise be silently ignored.
    """
    if env_file is not None and not env_file.is_file():
        raise SettingsError(f"settings file {env_file} does not exist (copy config/example.env to start one)")
    path = env_file if env_file is not None else DEFAULT_ENV_FILE
    file_values = _read_env_file(path)
    _check_names(os.environ.keys(), "the environment")
    _check_names(file_values.keys(), str(path))
    try:
        return cls(_env_file=path if file_values else None, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        raise SettingsError(_describe(exc, cls)) from None


def _read_env_file(env_file: Path) -> dict[str, str | None]:
    if not env_file.is_file():
        return {}
    try:
        return dict(dotenv_values(env_file))
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"cannot read {env_file}: {exc}") from None


def _known_names() -> set[str]:
    return {env_name(field) for cls in ALL_SETTINGS for field in cls.model_fields}


def _check_names(names: Any, where: str) -> None:
    known = _known_names()
    for name in sorted(names):
        upper = name.upper()
        if upper.startswith(ENV_PREFIX) and upper not in known:
            close = difflib.get_close_matches(upper, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else f"; known settings: {', '.join(sorted(known))}"
            raise SettingsError(f"unknown setting {name} in {where}{hint}")
        if not upper.startswith(ENV_PREFIX) and ENV_PREFIX + upper in known and where != "the environment":
            raise SettingsError(f"{name} in {where} is missing the prefix: write {ENV_PREFIX}{upper}")


def _describe(exc: ValidationError, cls: type[CommonSettings]) -> str:
    problems = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "?"
        name = env_name(field)
        if error["type"] == "missing":
            hint = cls.hints.get(field)
            problems.append(f"{name} is not set" + (f": {hint}" if hint else ""))
            continue
        message = str(error["msg"]).removeprefix("Value error, ")
        shown = (
            "" if "token" in field or not isinstance(error.get("input"), str | int) else f" (got {error['input']!r})"
        )
        problems.append(f"{name} {message}{shown}" if message.startswith("must") else f"{name}: {message}{shown}")
    return "; ".join(problems)
