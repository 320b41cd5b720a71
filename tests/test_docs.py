"""The README and the documentation site (docs/*.md) stay true: every generated block
(the registry's tables, the CLI's help, the benchmark tables) equals its source, the two
commands are the ones CI runs, every ``python`` block runs as written, the README is short
and its links resolve, and the gallery shows what its examples write."""
import importlib.util
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))


def _tables():
    spec = importlib.util.spec_from_file_location("_probgen_docs_tables", DOCS / "tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _assert_generated_table(marker: str, what: str, table: str, pages=None) -> None:
    """Every block between ``<!-- marker:start -->`` and ``<!-- marker:end -->`` of the docs
    pages and the README is ``table``, and there is at least one."""
    found = 0
    for path in pages or PAGES + [ROOT / "README.md"]:
        for name, body in _tables().blocks(path.read_text()):
            if name == marker:
                found += 1
                assert body.strip() == table.strip(), (
                    f"{path.relative_to(ROOT)}: the {what} is stale: run `python docs/tables.py`")
    assert found, f"no page has a {what} between {marker} markers"


def test_models_engines_table_matches_registry():
    from probgen.cli import compatibility_table
    _assert_generated_table("table", "models × engines table", compatibility_table(), [ROOT / "README.md"])
    _assert_generated_table("table", "models × engines table", compatibility_table(), [DOCS / "concepts.md"])


def test_methods_table_matches_registry():
    from probgen.cli import methods_table
    _assert_generated_table("methods", "methods table (steps unit, history objective)", methods_table())


def test_every_generated_block_equals_its_source():
    """The benchmark tables equal their JSON files, the CLI listing its parser, the registry
    tables the registry: ``python docs/tables.py --check``."""
    assert _tables().stale() == [], "run `python docs/tables.py` to rewrite the stale blocks"


def test_every_benchmark_json_is_shown_and_every_table_cell_comes_from_it():
    """Each ``docs/benchmarks/*.json`` has a block on the benchmarks page, and the shared
    format's tables are rectangular (what ``benchmarks/_tables.py`` writes)."""
    import json
    page = (DOCS / "benchmarks.md").read_text()
    names = {n.split(":")[-1].split("/")[0] for n, _ in _tables().blocks(page)}
    for path in (DOCS / "benchmarks").glob("*.json"):
        assert path.stem in names, f"{path.name} has no table on docs/benchmarks.md"
        doc = json.loads(path.read_text())
        for t in (doc.get("tables", {}).values() if isinstance(doc, dict) else []):
            assert all(len(r) == len(t["columns"]) == len(t["align"]) for r in t["rows"]), path.name


def test_readme_commands_are_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    for text in (README, (DOCS / "getting-started.md").read_text()):
        assert 'pip install torch==2.13.0 -e ".[dev]" && probgen demo' in text
        assert "\npytest\n" in text
    assert 'pip install -q torch==2.13.0 -e ".[dev]"' in ci
    assert "\npytest\n" in ci
    assert "mkdocs build --strict" in ci


def test_readme_is_one_screen_and_its_links_resolve():
    assert len(README.splitlines()) <= 200
    links = re.findall(r"\]\(((?!https?:)[^)#]+)(?:#[^)]*)?\)", README)
    assert any(l.startswith("docs/") for l in links)
    missing = [l for l in links if not (ROOT / l).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"
    assert "mkdocs serve" in README


def test_every_image_on_the_site_exists():
    for page in PAGES:
        for src in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page.read_text()):
            assert (page.parent / src).exists(), f"{page.relative_to(ROOT)} shows {src}, which does not exist"


def test_gallery_shows_what_its_commands_write():
    """Under each ``## ... — `examples/X.py``` heading of the gallery, every picture is a file
    that script writes (its name, or its prefix before a formatted part, is in the source)."""
    text = (DOCS / "gallery.md").read_text()
    sections = re.split(r"\n## ", text)[1:]
    checked = 0
    for section in sections:
        m = re.search(r"`((?:examples|benchmarks)/\w+\.py)`", section)
        scripts = re.findall(r"python ((?:examples|benchmarks)/\w+\.py)", section)
        assert m or scripts, f"gallery section without its command: {section.splitlines()[0]}"
        for src in re.findall(r"!\[[^\]]*\]\(img/([^)]+)\)", section):
            stem = src.rsplit(".", 1)[0]
            sources = [(ROOT / s).read_text() for s in ([m.group(1)] if m else scripts)]
            prefixes = {stem, stem.split("_")[0] + "_", stem.rsplit("_", 1)[0] + "_", stem.split("-")[0] + "_"}
            assert any(p in s for p in prefixes for s in sources), f"gallery: img/{src} is not written by {m or scripts}"
            checked += 1
    assert checked >= 20


def _python_blocks():
    blocks = [("README.md", b) for b in re.findall(r"```python\n(.*?)```", README, re.S)]
    for page in PAGES:
        blocks += [(str(page.relative_to(ROOT)), b) for b in re.findall(r"```python\n(.*?)```", page.read_text(), re.S)]
    return blocks


@pytest.mark.parametrize("index", range(len(_python_blocks())))
def test_code_block_runs_as_written(index, monkeypatch, tmp_path):
    """Every ```python block of the README and the docs pages runs on its own, as written —
    only the iteration budgets are cut to 2 (``steps`` of ``pg.fit``) so that the suite stays
    fast: the names, options and data forms a reader copies are the ones the library takes."""
    import probgen as pg
    real_fit = pg.fit

    def short_fit(*args, **kwargs):
        kwargs["steps"] = min(kwargs.get("steps") or 2, 2)
        kwargs["progress"] = False
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(pg, "fit", short_fit)
    monkeypatch.chdir(tmp_path)
    where, code = _python_blocks()[index]
    exec(compile(code, f"{where} python block {index}", "exec"), {"__name__": "readme_block"})


def test_every_benchmark_table_says_what_made_it():
    """Next to every benchmark table (``bench:FILE/...``) the page has ``run:FILE``: the
    sentence saying which command made the numbers, when, under which load, with which
    versions — rendered from the JSON (``benchmarks/_tables.py``'s ``provenance``); a file
    made by a run records all of that, one not (yet) made by a run says where it came from."""
    import json
    for page in PAGES:
        names = [n for n, _ in _tables().blocks(page.read_text())]
        for f in {n[len("bench:"):].split("/")[0] for n in names if n.startswith("bench:")}:
            assert f"run:{f}" in names, f"{page.relative_to(ROOT)} shows bench:{f} without its run:{f} block"
    for path in (DOCS / "benchmarks").glob("*.json"):
        doc = json.loads(path.read_text())
        if not (isinstance(doc, dict) and "tables" in doc):
            continue  # a format of its own (recovery, missing, networks, ...)
        run = doc.get("run")
        if run is None:
            assert doc.get("source"), f"{path.name}: neither a run nor a source"
            continue
        assert run["argv"].startswith("python ") and "load average" in run["load"], path.name
        assert run["finished"][:4].isdigit() and {"probgen", "torch"} <= set(run["versions"]), path.name
        # a comparison records its peer's version; a run with no peer (an example's own estimates) says so
        assert len(run["versions"]) > 2 or "no peer" in doc.get("note", "").lower(), f"{path.name}: no peer's version recorded"


def test_inline_values_come_from_the_json(tmp_path, monkeypatch):
    """``<!-- value:FILE/TABLE/ROW/COLUMN:start -->...<!-- ...:end -->`` in prose is one
    cell of the JSON: rewritten from it, and a hand-edited one is reported stale."""
    import json
    mod = _tables()
    monkeypatch.setattr(mod, "BENCH_JSON", tmp_path)
    (tmp_path / "demo.json").write_text(json.dumps({"command": "x", "tables": {"t": {
        "columns": ["case", "ratio", "ratio"], "align": ["", "", ""], "rows": [["a b", "6.7×", "2"], ["c", "1", "3"]]}}}))
    text = "It is <!-- value:demo/t/a b/1:start -->9×<!-- value:demo/t/a b/1:end --> faster.\n"
    assert mod.regenerate(text, cached=False) == text.replace("9×", "6.7×")
    assert mod.blocks(text) == [("value:demo/t/a b/1", "9×")]
    assert mod.value("demo/t/c/2") == "3"
    with pytest.raises(ValueError, match="not one column"):
        mod.value("demo/t/c/ratio")      # two columns are called "ratio": give the index
    with pytest.raises(ValueError, match="no row"):
        mod.value("demo/t/z/1")


def test_benchmark_json_records_its_run(tmp_path, capsys, monkeypatch):
    """``benchmarks/_tables.py``: ``parser`` gives ``--json`` and ``--table``; ``emit`` writes
    the tables with the command line, start and end, the load and the versions (a peer that
    is not installed says so); ``--table`` prints the file's provenance and tables again."""
    import json
    import sys
    mod = _tables()._benchmark("_tables")
    ap = mod.parser("demo", "Demo benchmark.\n\nMore text.")
    path = tmp_path / "demo.json"
    monkeypatch.setattr(sys, "argv", ["benchmarks/demo.py", "--json", str(path)])
    a = ap.parse_args()
    mod.emit(a.json, "python benchmarks/demo.py", {"t": mod.table(["case", "ratio"], [["a", "2.0×"]])},
             peers=("pytest", "no-such-peer-dist"), note="3 rows")
    doc = json.loads(path.read_text())
    run = doc["run"]
    assert run["argv"] == f"python benchmarks/demo.py --json {path}" and doc["note"] == "3 rows"
    assert "load average" in run["load"] and run["started"] <= run["finished"]
    assert run["versions"]["no-such-peer-dist"] == "absent" and run["versions"]["pytest"] == pytest.__version__
    sentence = mod.provenance(doc)
    assert sentence.startswith("*Run `python benchmarks/demo.py") and "3 rows." in sentence
    capsys.readouterr()
    with pytest.raises(SystemExit):
        ap.parse_args(["--table", str(path)])
    out = capsys.readouterr().out
    assert sentence in out and "| a | 2.0× |" in out


def test_no_line_starts_with_an_inline_value():
    """A line that begins with ``<!--`` starts an HTML block (Markdown and GitHub) and
    breaks the sentence it belongs to: an inline value never opens a line."""
    for page in PAGES + [ROOT / "README.md"]:
        for i, line in enumerate(page.read_text().splitlines(), 1):
            assert not line.startswith("<!-- value:"), f"{page.relative_to(ROOT)}:{i} starts with an inline value"
