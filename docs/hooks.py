"""MkDocs hooks (``hooks:`` in mkdocs.yml): every page's generated blocks are rendered
afresh from the source at build time (``docs/tables.py``: the registry's tables, the CLI's
help, the benchmark tables from ``docs/benchmarks/*.json``), so the site cannot show a
stale number even where a committed page is behind (``tests/test_docs.py`` keeps those equal)."""
from __future__ import annotations

import importlib.util
import pathlib
import re

_spec = importlib.util.spec_from_file_location("_probgen_docs_tables", pathlib.Path(__file__).with_name("tables.py"))
tables = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tables)


_CODE = re.compile(r"`[^`\n]*`")


def _table_pipes(line: str) -> str:
    """GitHub needs ``\\|`` for a pipe inside a code span in a table cell and shows ``|``;
    Python-Markdown already keeps code spans whole and would show the backslash."""
    return _CODE.sub(lambda m: m.group(0).replace("\\|", "|"), line) if line.startswith("|") else line


def on_page_markdown(markdown, page, config, files):
    text = tables.regenerate(markdown)
    # an inline value's markers are HTML comments: on the site only the cell is left, so that
    # the sentence stays one paragraph whatever the markers' place
    text = tables.INLINE.sub(lambda m: m.group(2), text)
    return "\n".join(_table_pipes(line) for line in text.split("\n"))
