"""MkDocs hooks (``hooks:`` in mkdocs.yml): every page's generated blocks are rendered
afresh from the source at build time (``docs/tables.py``: the registry's tables, the CLI's
help, the benchmark tables from ``docs/benchmarks/*.json``), so the site cannot show a
stale number even where a committed page is behind (``tests/test_docs.py`` keeps those equal)."""
from __future__ import annotations

import importlib.util
import pathlib

_spec = importlib.util.spec_from_file_location("_probgen_docs_tables", pathlib.Path(__file__).with_name("tables.py"))
tables = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tables)


def on_page_markdown(markdown, page, config, files):
    return tables.regenerate(markdown)
