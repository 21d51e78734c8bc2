"""The house as docs/architecture.md draws it: adapters call the service faces and never the store, each
domain package names its face, and no repository outgrows its area."""

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "commprefs"
ADAPTERS = [*sorted((SOURCE / "api").glob("*.py")), *sorted((SOURCE / "pages").glob("*.py")), SOURCE / "cli.py"]
FACES = {"consent": "Consent", "tenancy": "Tenancy", "webhooks": "Webhooks", "transfer": "Transfer"}
REPOSITORY_LINES = 250


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at any depth of its code (imports inside functions included)."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda p: str(p.relative_to(SOURCE)))
def test_adapters_never_import_the_store(adapter: Path) -> None:
    reaching = sorted(
        m for m in imported_modules(adapter) if m == "commprefs.store" or m.startswith("commprefs.store.")
    )
    assert not reaching, f"{adapter.relative_to(SOURCE)} imports {reaching}: call a service face instead"


def test_the_check_sees_an_import_of_the_store(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from commprefs.store import Store\n")
    assert "commprefs.store" in imported_modules(sample)


@pytest.mark.parametrize(("package", "face"), sorted(FACES.items()))
def test_each_domain_package_names_its_service_face(package: str, face: str) -> None:
    init = SOURCE / package / "__init__.py"
    tree = ast.parse(init.read_text())
    exported = next(
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
    )
    assert isinstance(exported, ast.List)
    assert face in [element.value for element in exported.elts if isinstance(element, ast.Constant)]
    assert f"`{face}`" in (ast.get_docstring(tree) or ""), f"{package}/__init__.py's docstring should name {face}"


def test_no_repository_outgrows_its_area() -> None:
    repositories = []
    for path in sorted((SOURCE / "store").glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and node.name.endswith("Repository"):
                repositories.append(node.name)
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                assert length <= REPOSITORY_LINES, f"{path.name}: {node.name} is {length} lines"
    assert len(repositories) >= 7, repositories


def test_every_service_face_is_built_over_the_store_only() -> None:
    """A face takes the store and nothing else: what an adapter needs beyond it (settings, the request) it
    passes per call, so the faces stay usable from the API, the pages, the CLI and tests alike."""
    from commprefs.services import Services

    faces = Services.__init__.__code__.co_names
    for face in FACES.values():
        assert face in faces, f"Services does not build {face}"
