"""The docs' tables generated from the benchmarks' JSON files equal those files (on whichever docs page
shows them; every generated block: tests/test_docs.py)."""
import importlib.util
import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _module(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("bench", ["networks", "bn_structure", "online"])
def test_docs_table_rows_are_the_json_rows(bench):
    path = ROOT / "docs" / "benchmarks" / f"{bench}.json"
    if not path.exists():
        pytest.skip(f"{path.name} not written yet")
    rows = [_module(bench).table_row(r) for r in json.loads(path.read_text())]
    page = next((p for p in sorted((ROOT / "docs").rglob("*.md")) if rows[0] in p.read_text().splitlines()), None)
    assert page, f"no docs page shows the {bench} table"
    readme = page.read_text().splitlines()
    first = readme.index(rows[0])  # the table: the JSON's rows, in order, one after the other
    assert readme[first:first + len(rows)] == rows
    assert not readme[first + len(rows)].startswith("| "), "the docs table has rows the JSON lacks"
