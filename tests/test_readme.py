"""The README stays true: its models × engines table equals the registry, and its two
commands are the ones CI runs."""
import pathlib
import re

import pytest

from probgen.cli import compatibility_table

README = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()


def _assert_generated_table(marker: str, what: str, table: str) -> None:
    """The README block between ``<!-- marker:start -->`` and ``<!-- marker:end -->`` is ``table``."""
    block = re.search(rf"<!-- {marker}:start -->\n(.*?)\n<!-- {marker}:end -->", README, re.S)
    assert block, f"README has a {what} between {marker} markers"
    assert block.group(1).strip() == table.strip(), f"README {what} is stale: regenerate it with `probgen list`"


def test_models_engines_table_matches_registry():
    _assert_generated_table("table", "models × engines table", compatibility_table())


def test_readme_commands_are_what_ci_runs():
    ci = (pathlib.Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert 'pip install torch==2.13.0 -e ".[dev]" && probgen demo' in README
    assert 'pip install -q torch==2.13.0 -e ".[dev]"' in ci
    assert "\npytest\n" in README and "\npytest\n" in ci


def test_methods_table_matches_registry():
    from probgen.cli import methods_table
    _assert_generated_table("methods", "methods table (steps unit, history objective)", methods_table())


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", README, re.S)


@pytest.mark.parametrize("index", range(len(_python_blocks())))
def test_readme_code_block_runs_as_written(index, monkeypatch, tmp_path):
    """Every ```python block of the README runs on its own, as written — only the iteration
    budgets are cut to 2 (``steps`` of ``pg.fit``) so that the suite stays fast: the names,
    options and data forms a reader copies are the ones the library takes."""
    import probgen as pg
    real_fit = pg.fit

    def short_fit(*args, **kwargs):
        kwargs["steps"] = min(kwargs.get("steps") or 2, 2)
        kwargs["progress"] = False
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(pg, "fit", short_fit)
    monkeypatch.chdir(tmp_path)
    code = _python_blocks()[index]
    exec(compile(code, f"README.md python block {index}", "exec"), {"__name__": "readme_block"})
