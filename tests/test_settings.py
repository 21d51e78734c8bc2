"""Every setting has a default, a one-line help, and a row in the README's configuration table."""

from pathlib import Path

from commprefs.config import Settings

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_setting_is_documented_in_code_and_readme() -> None:
    readme = README.read_text()
    for name, field in Settings.model_fields.items():
        assert field.description, f"{name} has no description"
        assert f"`COMMPREFS_{name.upper()}`" in readme, f"COMMPREFS_{name.upper()} is missing from README.md"


def test_settings_read_the_environment(monkeypatch: object) -> None:
    import pytest

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    monkeypatch.setenv("COMMPREFS_PORT", "9999")
    monkeypatch.setenv("COMMPREFS_LOG_PII", "true")
    settings = Settings()
    assert settings.port == 9999 and settings.log_pii is True
