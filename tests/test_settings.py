"""Settings: sources and precedence, one-line errors that name the variable, typo detection, example.env."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from config.settings import (
    ALL_SETTINGS,
    DEFAULT_MODEL,
    BotSettings,
    RunSettings,
    SettingsError,
    WorkerSettings,
    env_name,
    load_settings,
)
from tests.helpers import TOKEN

ROOT = Path(__file__).resolve().parent.parent


def test_worker_defaults(clean_env: Path) -> None:
    settings = load_settings(WorkerSettings)
    assert (settings.model, settings.device, settings.dtype, settings.redis_url) == (
        DEFAULT_MODEL,
        "auto",
        "auto",
        None,
    )


def test_dotenv_in_working_folder_is_read(clean_env: Path) -> None:
    (clean_env / ".env").write_text(f"DIA_DISCORD_TOKEN={TOKEN}\nDIA_DEV_GUILD_ID=1234\n# a comment\n")
    settings = load_settings(BotSettings)
    assert settings.discord_token.get_secret_value() == TOKEN
    assert settings.dev_guild_id == 1234


def test_environment_beats_dotenv_and_overrides_beat_both(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (clean_env / ".env").write_text("DIA_MODEL=from-file\nDIA_DEVICE=cpu\nDIA_DTYPE=float16\n")
    monkeypatch.setenv("DIA_MODEL", "from-env")
    monkeypatch.setenv("DIA_DEVICE", "cuda:1")
    settings = load_settings(WorkerSettings, dtype="bfloat16")
    assert (settings.model, settings.device, settings.dtype) == ("from-env", "cuda:1", "bfloat16")


def test_explicit_env_file_must_exist(clean_env: Path) -> None:
    with pytest.raises(SettingsError, match=r"settings file .*nope\.env does not exist"):
        load_settings(WorkerSettings, clean_env / "nope.env")


def test_explicit_env_file_is_read(clean_env: Path) -> None:
    path = clean_env / "worker.env"
    path.write_text("DIA_DEVICE=cpu\n")
    assert load_settings(WorkerSettings, path).device == "cpu"


def test_empty_value_means_not_set(clean_env: Path) -> None:
    (clean_env / ".env").write_text("DIA_REDIS_URL=\nDIA_DEV_GUILD_ID=\n")
    assert load_settings(RunSettings).redis_url is None


def test_missing_token_names_the_variable_and_where_to_get_one(clean_env: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(BotSettings)
    message = str(caught.value)
    assert message.startswith("DIA_DISCORD_TOKEN is not set")
    assert "https://discord.com/developers/applications" in message
    assert "\n" not in message


def test_malformed_token_is_rejected_without_echoing_it(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "0123456789abcdef0123456789abcdef"  # the shape of a client secret
    monkeypatch.setenv("DIA_DISCORD_TOKEN", secret)
    with pytest.raises(SettingsError, match="DIA_DISCORD_TOKEN: does not look like a bot token") as caught:
        load_settings(BotSettings)
    assert secret not in str(caught.value)


def test_token_surrounding_whitespace_is_dropped(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIA_DISCORD_TOKEN", f"  {TOKEN} ")
    assert load_settings(BotSettings).discord_token.get_secret_value() == TOKEN


def test_several_problems_make_one_line(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIA_DEV_GUILD_ID", "my-server")
    monkeypatch.setenv("DIA_LOG_LEVEL", "loud")
    with pytest.raises(SettingsError) as caught:
        load_settings(BotSettings)
    message = str(caught.value)
    assert "\n" not in message
    assert "DIA_DISCORD_TOKEN is not set" in message
    assert "DIA_DEV_GUILD_ID" in message and "'my-server'" in message
    assert "DIA_LOG_LEVEL" in message


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("DIA_REDIS_URL", "localhost:6379", "DIA_REDIS_URL must start with redis://"),
        ("DIA_DEVICE", "gpu", "DIA_DEVICE must be auto, cpu, cuda, cuda:N or mps (got 'gpu')"),
        ("DIA_DTYPE", "fp8", "DIA_DTYPE: Input should be 'auto', 'float32', 'bfloat16' or 'float16'"),
        ("DIA_OPUS_COMPLEXITY", "11", "DIA_OPUS_COMPLEXITY: Input should be less than or equal to 10"),
        ("DIA_MODEL", "", None),  # empty means unset: the default model
    ],
)
def test_worker_values_are_validated(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str | None
) -> None:
    monkeypatch.setenv(name, value)
    if expected is None:
        assert load_settings(WorkerSettings).model == DEFAULT_MODEL
        return
    with pytest.raises(SettingsError) as caught:
        load_settings(WorkerSettings)
    assert str(caught.value).startswith(expected)


def test_log_level_is_case_insensitive(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIA_LOG_LEVEL", "debug")
    assert load_settings(RunSettings).log_level == "DEBUG"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("DIA_DISCORD_API_BASE", "discord.com/api", "DIA_DISCORD_API_BASE must be an http(s):// URL"),
        ("DIA_DISCORD_GATEWAY_URL", "https://gateway", "DIA_DISCORD_GATEWAY_URL must be a ws(s):// URL"),
    ],
)
def test_discord_urls_are_validated(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv("DIA_DISCORD_TOKEN", TOKEN)
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=re.escape(expected)):
        load_settings(BotSettings)


def test_emulator_overrides_are_detected(clean_env: Path) -> None:
    real = load_settings(BotSettings, discord_token=TOKEN)
    local = load_settings(
        BotSettings,
        discord_token=TOKEN,
        discord_api_base="http://127.0.0.1:1234/api/v10/",
        discord_voice_tls_verify=False,
    )
    assert real.uses_real_discord()
    assert not local.uses_real_discord()
    assert local.discord_api_base == "http://127.0.0.1:1234/api/v10"


def test_typo_in_dotenv_suggests_the_setting(clean_env: Path) -> None:
    (clean_env / ".env").write_text("DIA_DISCORD_TOKNE=x\n")
    expected = "unknown setting DIA_DISCORD_TOKNE in .env (did you mean DIA_DISCORD_TOKEN?)"
    with pytest.raises(SettingsError, match=re.escape(expected)):
        load_settings(BotSettings)


def test_typo_in_environment_suggests_the_setting(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIA_REDIS_ULR", "redis://x")
    expected = "unknown setting DIA_REDIS_ULR in the environment (did you mean DIA_REDIS_URL?)"
    with pytest.raises(SettingsError, match=re.escape(expected)):
        load_settings(WorkerSettings)


def test_missing_prefix_in_dotenv_is_pointed_out(clean_env: Path) -> None:
    (clean_env / ".env").write_text(f"DISCORD_TOKEN={TOKEN}\n")
    with pytest.raises(SettingsError, match=r"DISCORD_TOKEN in \.env is missing the prefix: write DIA_DISCORD_TOKEN"):
        load_settings(BotSettings)


def test_other_variables_in_dotenv_are_left_alone(clean_env: Path) -> None:
    (clean_env / ".env").write_text("HF_TOKEN=hf_abc\nDIA_DEVICE=cpu\n")
    assert load_settings(WorkerSettings).device == "cpu"


def test_require_redis_url_explains_both_ways(clean_env: Path) -> None:
    with pytest.raises(SettingsError, match=r"DIA_REDIS_URL is not set: .*`make run`"):
        load_settings(WorkerSettings).require_redis_url()
    url = "redis://localhost:6379/2"
    assert load_settings(WorkerSettings, redis_url=url).require_redis_url() == url


def test_settings_are_immutable(clean_env: Path) -> None:
    settings = load_settings(WorkerSettings)
    with pytest.raises(ValidationError):
        settings.device = "cpu"  # type: ignore[misc]


def _names_in(example: str) -> set[str]:
    return set(re.findall(r"^#? ?(DIA_[A-Z_]+)=", example, flags=re.MULTILINE))


def test_example_env_documents_every_setting_and_nothing_else() -> None:
    example = (ROOT / "config" / "example.env").read_text()
    known = {env_name(field) for cls in ALL_SETTINGS for field in cls.model_fields}
    assert _names_in(example) == known


def test_readme_table_lists_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    in_table = set(re.findall(r"^\| `(DIA_[A-Z_]+)` \|", readme, flags=re.MULTILINE))
    known = {env_name(field) for cls in ALL_SETTINGS for field in cls.model_fields}
    assert in_table == known


def test_example_env_loads_as_it_ships(clean_env: Path) -> None:
    """A fresh copy of example.env is valid for the worker and the launcher; the bot wants its token."""
    (clean_env / ".env").write_text((ROOT / "config" / "example.env").read_text())
    assert load_settings(WorkerSettings).model == DEFAULT_MODEL
    assert load_settings(RunSettings).data_dir == Path("data")
    with pytest.raises(SettingsError, match=r"^DIA_DISCORD_TOKEN is not set"):
        load_settings(BotSettings)
