"""The pages' languages: every string in the templates and views is translated, and the choice of
language follows the link, then the browser, then the portal."""

import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from commprefs.pages import i18n

ROOT = Path(__file__).resolve().parents[2]
PAGES = ROOT / "src" / "commprefs" / "pages"
PLACEHOLDER = re.compile(r"%\((\w+)\)s")
METHODS = [("**.py", "python"), ("templates/**.html", "jinja2"), ("templates/**.txt", "jinja2")]


def extracted() -> set[str]:
    """Every message the pages can show, found the way `pybabel extract -F babel.cfg` finds them."""
    found = extract_from_dir(PAGES, METHODS, keywords={"_": None, "gettext": None, "translate": (2,)})
    return {message for _, _, message, _, _ in found if isinstance(message, str)}


@pytest.mark.parametrize("language", sorted(set(i18n.LANGUAGES) - {i18n.DEFAULT_LANGUAGE}))
def test_every_message_is_translated(language: str) -> None:
    wanted = extracted()
    assert len(wanted) > 40
    with (PAGES / "locales" / language / "LC_MESSAGES" / "messages.po").open("rb") as po:
        catalog = read_po(po, locale=language)
    translated = {m.id: m.string for m in catalog if m.id}
    assert wanted - set(translated) == set(), "messages missing from the catalogue (run pybabel update)"
    assert set(translated) - wanted == set(), "stale messages in the catalogue"
    for message_id, text in translated.items():
        assert text, f"{language}: no translation for {message_id!r}"
        assert sorted(PLACEHOLDER.findall(text)) == sorted(PLACEHOLDER.findall(message_id)), message_id
    assert not any(m.fuzzy for m in catalog), "fuzzy entries are not used at run time"


def test_catalogues_compile_and_translate() -> None:
    assert i18n.translations("de").gettext("Save preferences") == "Einstellungen speichern"
    assert i18n.translations("fr").gettext("Save preferences") == "Enregistrer les préférences"
    assert i18n.translations("en").gettext("Save preferences") == "Save preferences"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("de-DE,de;q=0.9,en;q=0.8", ["de-DE", "de", "en"]),
        ("en;q=0.1, fr", ["fr", "en"]),
        ("fr;q=0, de", ["de"]),
        ("*;q=0.5, es;q=bad", ["*"]),
        ("", []),
        (None, []),
    ],
)
def test_accept_language_is_ranked_by_quality(header: str | None, expected: list[str]) -> None:
    assert i18n.accept_language(header) == expected


@pytest.mark.parametrize(
    ("chosen", "link", "header", "default", "expected"),
    [
        ("fr", "de", "en", "en", "fr"),
        (None, "de_AT", "fr", "en", "de"),
        (None, "pt", "es, fr;q=0.5", "de", "fr"),
        (None, None, None, "de", "de"),
        (None, None, None, "xx", "en"),
        ("zz", None, None, None, "en"),
    ],
)
def test_language_precedence(
    chosen: str | None, link: str | None, header: str | None, default: str | None, expected: str
) -> None:
    assert i18n.choose(chosen=chosen, link=link, header=header, portal_default=default) == expected
