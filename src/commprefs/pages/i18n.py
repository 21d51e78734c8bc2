"""Page languages: gettext catalogues (en, de, fr) and the choice of language for a request.

The catalogues are standard gettext `.po` files under `locales/`, compiled in memory on first use.
"""

import gettext
from functools import cache
from io import BytesIO
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from commprefs.domain.model import Definition

LANGUAGES = {"en": "English", "de": "Deutsch", "fr": "Français"}
DEFAULT_LANGUAGE = "en"
LOCALES = Path(__file__).parent / "locales"


@cache
def translations(language: str) -> gettext.NullTranslations:
    if language == DEFAULT_LANGUAGE:
        return gettext.NullTranslations()
    with (LOCALES / language / "LC_MESSAGES" / "messages.po").open("rb") as po:
        catalog = read_po(po, locale=language)
    compiled = BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return gettext.GNUTranslations(compiled)


def supported(tag: str | None) -> str | None:
    """Our language for a tag such as `de`, `de-AT` or `fr_CA`, if we have it."""
    if not tag:
        return None
    primary = tag.strip().replace("_", "-").split("-", 1)[0].lower()
    return primary if primary in LANGUAGES else None


def accept_language(header: str | None) -> list[str]:
    """The tags of an Accept-Language header, most preferred first (q=0 excluded)."""
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate((header or "").split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        if tag and quality > 0:
            ranked.append((-quality, position, tag))
    return [tag for _, _, tag in sorted(ranked)]


def choose(*, chosen: str | None, link: str | None, header: str | None, portal_default: str | None) -> str:
    """The page language: the visitor's pick on the page, then the link's, then Accept-Language,
    then the portal's default, then English."""
    for tag in (chosen, link, *accept_language(header), portal_default):
        found = supported(tag)
        if found:
            return found
    return DEFAULT_LANGUAGE


def localized(definition: Definition, language: str) -> tuple[str, str]:
    """A definition's name and description in `language`, where it has a translation."""
    for translation in definition.translations:
        if supported(translation.language_code) == language:
            return translation.name, translation.description
    return definition.name, definition.description
