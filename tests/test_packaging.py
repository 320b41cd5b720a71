"""Every package folder is listed in pyproject (an unlisted one is missing from the wheel)."""
import pathlib
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PREFIX = {"probgen": "probgen", "models": "probgen.models", "inference": "probgen.inference"}


def test_every_package_is_listed():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    for top, dotted in PREFIX.items():
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top).parts
            found.add(".".join((dotted,) + rel))
    assert found == listed, f"unlisted: {found - listed}; listed but missing: {listed - found}"


def test_every_folder_with_python_is_a_package():
    for top in PREFIX:
        for py in (ROOT / top).rglob("*.py"):
            assert (py.parent / "__init__.py").exists(), f"{py.parent} has .py files but no __init__.py"
