"""Every generated block of the docs pages and the README, from the source.

A block is the text between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``; NAME says
what makes it:

* ``table``, ``methods``, ``devices``: the registry (``probgen list``: the models × engines
  table, each method's ``steps`` unit and objective, devices and checkpoints);
* ``cli``: the command line's ``--help`` texts (the argparse parser itself);
* ``NAME`` with a ``docs/benchmarks/NAME.json`` (``recovery``, ``missing``, ``networks``,
  ``bn_structure``, ``distributed``): that benchmark's own JSON format, rendered by the
  benchmark's own ``table(doc)`` (or ``HEADER`` and ``table_row(row)``);
* ``bench:FILE/TABLE``: table ``TABLE`` of ``docs/benchmarks/FILE.json``, in the benchmarks'
  shared format (``benchmarks/_tables.py``);
* ``run:FILE``: the sentence saying what made ``docs/benchmarks/FILE.json`` (its command line,
  date, load, the peers' versions, the sizes: ``provenance`` in ``benchmarks/_tables.py``);
* ``value:FILE/TABLE/ROW/COLUMN``: one cell of such a table, inline in prose (ROW: the row
  whose first cell is ROW, slashes allowed; COLUMN: a column name without a slash, or its
  index where names repeat), written
  ``<!-- value:...:start -->6.7×<!-- value:...:end -->`` on one line.

No number on the site is typed by hand: ``python docs/tables.py`` rewrites every block in
place, ``python docs/tables.py --check`` lists the stale ones (exit 1); the site's build
(``docs/hooks.py``) renders every page's blocks afresh, and ``tests/test_docs.py`` checks
that the committed pages equal what this module makes.
"""
from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BENCH_JSON = DOCS / "benchmarks"
BLOCK = re.compile(r"<!-- ([\w:/.-]+):start -->\n(.*?)\n?<!-- \1:end -->", re.S)
# an inline value: start and end markers on one line, no newlines around the cell
INLINE = re.compile(r"<!-- (value:[^\n]*?):start -->([^\n]*?)<!-- \1:end -->")


@functools.lru_cache(maxsize=None)
def _benchmark(name: str):
    """A benchmark script (or example) loaded as a module, without running its ``main``."""
    for folder in ("benchmarks", "examples"):
        path = ROOT / folder / f"{name}.py"
        if path.exists():
            sys.path.insert(0, str(path.parent))  # its sibling helpers (benchmarks/_tables.py)
            try:
                spec = importlib.util.spec_from_file_location(f"_docs_{folder}_{name}", path)
                mod = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(mod)
            finally:
                sys.path.remove(str(path.parent))
            return mod
    raise ValueError(f"no benchmarks/{name}.py or examples/{name}.py")


def _json(name: str):
    path = BENCH_JSON / f"{name}.json"
    if not path.exists():
        raise ValueError(f"a generated table needs {path.relative_to(ROOT)}: run its benchmark with --json")
    return json.loads(path.read_text())


def cli_help() -> str:
    """``probgen --help`` and every subcommand's ``--help``, as a Markdown listing."""
    import os
    from probgen import cli
    width = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps at the terminal's width: one fixed width
    try:
        parser = cli._parser()
        texts = [("", parser)] + [(f" {n}", p) for n, p in next(
            a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices.items()]
        texts = [(n, p.format_help().rstrip()) for n, p in texts]
    finally:
        if width is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = width
    out = ["```text"]
    for name, text in texts:
        out += [f"$ probgen{name} --help", text, ""]
    return "\n".join(out[:-1] + ["```"])


def render(name: str) -> str:
    """The Markdown of block ``name`` (see the module docstring)."""
    if name == "table":
        from probgen.cli import compatibility_table
        return compatibility_table()
    if name == "methods":
        from probgen.cli import methods_table
        return methods_table()
    if name == "devices":
        from probgen import devices
        return devices.table()
    if name == "cli":
        return cli_help()
    if name.startswith("bench:"):
        file, _, table = name[len("bench:"):].partition("/")
        tables = _json(file)["tables"]
        if table not in tables:
            raise ValueError(f"docs/benchmarks/{file}.json has no table {table!r} (it has {sorted(tables)})")
        return _benchmark("_tables").markdown(tables[table])
    if name.startswith("run:"):
        return _benchmark("_tables").provenance(_json(name[len("run:"):]))
    if name.startswith("value:"):
        return value(name[len("value:"):])
    if (BENCH_JSON / f"{name}.json").exists():  # a benchmark with a JSON format of its own
        mod = _benchmark(name)
        if hasattr(mod, "table"):
            return mod.table(_json(name))
        if hasattr(mod, "table_row") and hasattr(mod, "HEADER"):
            return "\n".join([mod.HEADER] + [mod.table_row(r) for r in _json(name)])
        raise ValueError(f"benchmarks/{name}.py has neither table(doc) nor HEADER and table_row(row)")
    raise ValueError(f"unknown generated block {name!r}")


def value(spec: str) -> str:
    """One cell, ``FILE/TABLE/ROW/COLUMN`` (see the module docstring): the number a sentence
    quotes, from the same JSON as the table next to it."""
    try:
        file, table, rest = spec.split("/", 2)
        row, column = rest.rsplit("/", 1)  # a row's name may hold a slash, a column's not
    except ValueError:
        raise ValueError(f"value:{spec}: write value:FILE/TABLE/ROW/COLUMN") from None
    tables = _json(file)["tables"]
    if table not in tables:
        raise ValueError(f"value:{spec}: docs/benchmarks/{file}.json has no table {table!r} (it has {sorted(tables)})")
    t = tables[table]
    rows = [r for r in t["rows"] if r[0] == row]
    if not rows:
        raise ValueError(f"value:{spec}: table {table!r} has no row {row!r} (rows: {[r[0] for r in t['rows']]})")
    if column.isdigit():
        j = int(column)
    elif t["columns"].count(column) == 1:
        j = t["columns"].index(column)
    else:
        raise ValueError(f"value:{spec}: column {column!r} is not one column of {t['columns']} (give its index)")
    return rows[0][j]


_render = functools.lru_cache(maxsize=None)(render)


def regenerate(text: str, cached: bool = True) -> str:
    """``text`` with every generated block replaced by what `render` makes now."""
    r = _render if cached else render
    text = BLOCK.sub(lambda m: f"<!-- {m.group(1)}:start -->\n{r(m.group(1))}\n<!-- {m.group(1)}:end -->", text)
    return INLINE.sub(lambda m: f"<!-- {m.group(1)}:start -->{r(m.group(1))}<!-- {m.group(1)}:end -->", text)


def blocks(text: str) -> list[tuple[str, str]]:
    """Every generated block of ``text``, inline values included: (name, current content)."""
    return ([(m.group(1), m.group(2)) for m in BLOCK.finditer(text)]
            + [(m.group(1), m.group(2)) for m in INLINE.finditer(text)])


def pages() -> list[pathlib.Path]:
    """The files with generated blocks: every docs page and the README."""
    return sorted(DOCS.rglob("*.md")) + [ROOT / "README.md"]


def stale() -> list[tuple[str, str]]:
    """(file, block) of every block whose committed content differs from `render`."""
    out = []
    for path in pages():
        for name, body in blocks(path.read_text()):
            if body.strip() != _render(name).strip():
                out.append((str(path.relative_to(ROOT)), name))
    return out


def main(argv=None) -> int:
    import argparse
    ap = argparse.ArgumentParser(description="Rewrite (or --check) the generated blocks of docs/*.md and README.md.")
    ap.add_argument("--check", action="store_true", help="only list stale blocks; exit 1 if there are any")
    a = ap.parse_args(argv)
    if a.check:
        bad = stale()
        for f, n in bad:
            print(f"stale: {f} block {n}")
        return 1 if bad else 0
    for path in pages():
        text = path.read_text()
        new = regenerate(text)
        if new != text:
            path.write_text(new)
            print("rewrote", path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
