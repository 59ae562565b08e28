"""Settings: validated at start-up, one clear line per bad value, nothing read at import time."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from portal.settings import SettingsError, load_settings

ENCLAVE = str(Path(sys.executable).parent / "enclave")


def test_defaults_are_the_embedded_stack(tmp_path: Path) -> None:
    s = load_settings(data_dir=tmp_path)
    assert s.resolved_database_url.startswith("sqlite+aiosqlite:///")
    assert s.resolved_database_url.endswith("enclave.db")
    assert s.qdrant_url is None and s.uses_embedded_llm and s.uses_embedded_idp
    assert s.session_idle_minutes == 15


def test_postgres_url_is_normalised_to_asyncpg() -> None:
    s = load_settings(database_url="postgresql://u@db.internal:5432/enclave")
    assert s.resolved_database_url == "postgresql+asyncpg://u@db.internal:5432/enclave"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"database_url": "mysql://root@localhost/x"}, "ENCLAVE_DATABASE_URL: unknown database scheme 'mysql'"),
        ({"port": "eighty"}, "ENCLAVE_PORT"),
        ({"mode": "staging"}, "ENCLAVE_MODE"),
        ({"mode": "production"}, "production mode needs ENCLAVE_SECRET_KEY"),
        (
            {"mode": "production", "secret_key": "x" * 40, "llm_base_url": "http://llm.example.org/v1"},
            "llm_base_url: plain http:// to a remote host is refused",
        ),
        (
            {"mode": "production", "secret_key": "x" * 40, "qdrant_url": "http://qdrant.example.org:6333"},
            "qdrant_url: plain http:// to a remote host is refused",
        ),
        (
            {"mode": "production", "secret_key": "x" * 40, "database_url": "postgresql://u@db.example.org/enclave"},
            "database_url: a remote PostgreSQL needs TLS",
        ),
    ],
)
def test_bad_values_give_one_clear_line(overrides: dict[str, object], expected: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(**overrides)
    assert any(expected in line for line in info.value.lines), info.value.lines
    assert all("\n" not in line for line in info.value.lines)


def test_production_allows_plain_http_to_named_internal_hosts() -> None:
    s = load_settings(
        mode="production",
        secret_key="k" * 40,
        internal_hosts="vllm,qdrant",
        llm_base_url="http://vllm:8000/v1",
        qdrant_url="http://qdrant:6333",
        database_url="postgresql://enclave@127.0.0.1/enclave",
    )
    assert s.llm_base_url == "http://vllm:8000/v1"


def test_environment_and_toml_file_are_read_when_settings_are_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "enclave.toml"
    toml.write_text('llm_model = "from-toml"\nport = 9001\n')
    monkeypatch.setenv("ENCLAVE_CONFIG_FILE", str(toml))
    monkeypatch.setenv("ENCLAVE_PORT", "9100")
    s = load_settings()
    assert s.llm_model == "from-toml"
    assert s.port == 9100  # the environment wins over the file


def test_cli_prints_one_line_per_bad_value_and_exits_non_zero(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENCLAVE_")}
    env.update({"ENCLAVE_DATABASE_URL": "oracle://x", "ENCLAVE_PORT": "0", "ENCLAVE_DATA_DIR": str(tmp_path)})
    result = subprocess.run([ENCLAVE, "db", "current"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 2, result.stderr
    assert any("ENCLAVE_DATABASE_URL" in line and "oracle" in line for line in lines)
    assert any("ENCLAVE_PORT" in line for line in lines)
    assert "Traceback" not in result.stderr


def test_enclave_help_lists_the_commands() -> None:
    result = subprocess.run([ENCLAVE, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for command in ("run", "web", "db"):
        assert f"  {command}" in result.stdout
    db_help = subprocess.run([ENCLAVE, "db", "--help"], capture_output=True, text=True, timeout=60).stdout
    for sub in ("upgrade", "downgrade", "current"):
        assert sub in db_help
