"""`commprefs serve` on an empty database prints a demo preference link that opens, in three languages."""

import re
from pathlib import Path

import httpx

from tests.procs import ServeProcess

LINK_RE = re.compile(r"Preference page of demo@example\.com:\n  (\S+)")


def test_serve_prints_a_working_demo_preference_link(tmp_path: Path) -> None:
    server = ServeProcess(f"sqlite:///{tmp_path / 'demo.db'}", tmp_path, "demo")
    try:
        server.wait_ready()
        link = LINK_RE.search(server.output())
        assert link, server.output()
        assert link.group(1).startswith(f"{server.base_url}/preferences/")
        english = httpx.get(link.group(1))
        assert english.status_code == 200
        assert "Newsletter" in english.text and "Product updates" in english.text
        german = httpx.get(link.group(1), headers={"Accept-Language": "de"})
        assert "Produktneuigkeiten" in german.text and "Ihre E-Mail-Einstellungen" in german.text
        french = httpx.get(link.group(1) + "?lang=fr")
        assert "Nouveautés produit" in french.text
    finally:
        server.kill()
