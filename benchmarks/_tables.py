"""The benchmarks' shared JSON table format, written by ``--json PATH`` and read by the docs.

One file per benchmark, ``docs/benchmarks/<name>.json``::

    {"command": "python benchmarks/gmm.py ...",        # what made the numbers
     "source": "...",                                  # optional: how the file was made
     "tables": {"<table>": {"columns": [...], "align": ["", "r", ...], "rows": [[cell, ...], ...]}}}

Cells are the strings the benchmark prints (numbers formatted as the benchmark formats
them: its units, its precision). The docs' generated blocks ``<!-- bench:<name>/<table>:start -->``
are :func:`markdown` of one table (``docs/tables.py`` writes them; a test keeps them equal).
"""
from __future__ import annotations

import json
import os


def table(columns: list[str], rows: list[list], align: list[str] | None = None) -> dict:
    """One table of the format: ``columns`` (header cells), ``rows`` (lists of cells, each
    turned into its string), ``align`` (``"r"`` for a right-aligned column, else ``""``)."""
    rows = [[str(c) for c in r] for r in rows]
    if any(len(r) != len(columns) for r in rows):
        raise ValueError("every row needs one cell per column")
    return {"columns": list(columns), "align": list(align or [""] * len(columns)), "rows": rows}


def markdown(t: dict) -> str:
    """The Markdown of one table of the format."""
    sep = ["---:" if a == "r" else "---" for a in t["align"]]
    lines = ["| " + " | ".join(t["columns"]) + " |", "|" + "|".join(sep) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in t["rows"]]
    return "\n".join(lines)


def emit(path: str | None, command: str, tables: dict[str, dict], merge: bool = False, show: bool = True) -> None:
    """Print every table as Markdown and, with ``path``, write them in the format.

    With ``merge``, the rows of the file's table whose first cell no new row has are kept
    (before the new rows): runs of one case at a time (``--threads 1``, then ``2``) make one table.
    ``show=False``: the caller printed the rows as they came.
    """
    if path and merge and os.path.exists(path):
        with open(path) as f:
            old = json.load(f).get("tables", {})
        for name, t in tables.items():
            if name in old and old[name]["columns"] == t["columns"]:
                new_keys = {r[0] for r in t["rows"]}
                t["rows"] = [r for r in old[name]["rows"] if r[0] not in new_keys] + t["rows"]
    for t in tables.values() if show else ():
        print("\n" + markdown(t), flush=True)
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump({"command": command, "tables": tables}, f, indent=1, ensure_ascii=False)
            f.write("\n")
        print("wrote", path)


def row_table_args(ap) -> None:
    """The ``--json PATH`` / ``--table JSON`` options of a benchmark whose JSON is a list of
    row dicts rendered by its own ``HEADER`` and ``table_row`` (``networks``, ``bn_structure``)."""
    ap.add_argument("--json", default=None, metavar="PATH", help="write every row as JSON")
    ap.add_argument("--table", default=None, metavar="JSON", help="only print the table of a JSON file's rows")


def print_row_table(path: str, header: str, table_row) -> None:
    """Print the Markdown table of a row-list JSON file (``--table``)."""
    with open(path) as f:
        print(header + "\n" + "\n".join(table_row(r) for r in json.load(f)))
