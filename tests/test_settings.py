"""Every setting has a default, a one-line help, and a row in the configuration table of docs/configuration.md."""

import re
from pathlib import Path

from commprefs.config import Settings

CONFIGURATION = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def test_every_setting_is_documented_in_code_and_docs() -> None:
    docs = CONFIGURATION.read_text()
    for name, field in Settings.model_fields.items():
        assert field.description, f"{name} has no description"
        row = f"| `COMMPREFS_{name.upper()}` |"
        assert row in docs, f"COMMPREFS_{name.upper()} has no row in docs/configuration.md"


def test_the_configuration_table_names_no_setting_that_does_not_exist() -> None:
    rows = re.findall(r"^\| `(COMMPREFS_\w+)` \|", CONFIGURATION.read_text(), re.M)
    assert sorted(rows) == sorted(f"COMMPREFS_{name.upper()}" for name in Settings.model_fields)


def test_settings_read_the_environment(monkeypatch: object) -> None:
    import pytest

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    monkeypatch.setenv("COMMPREFS_PORT", "9999")
    monkeypatch.setenv("COMMPREFS_LOG_PII", "true")
    settings = Settings()
    assert settings.port == 9999 and settings.log_pii is True
