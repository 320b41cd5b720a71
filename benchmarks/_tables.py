"""The benchmarks' shared JSON table format, written by ``--json PATH`` and read by the docs.

One file per benchmark, ``docs/benchmarks/<name>.json``::

    {"command": "python benchmarks/gmm.py ...",        # what made the numbers
     "source": "...",                                  # optional: how the file was made (old, converted files)
     "note": "200 sequences x 500 steps, ...",         # optional: the sizes and settings of the run
     "run": {"argv": "...", "started": "...", "finished": "...", "load": "<uptime at the end>",
             "cpus": 2, "python": "...", "versions": {"probgen": ..., "torch": ..., "<peer>": ...}},
     "tables": {"<table>": {"columns": [...], "align": ["", "r", ...], "rows": [[cell, ...], ...]}}}

Cells are the strings the benchmark prints (numbers formatted as the benchmark formats
them: its units, its precision). The docs' generated blocks ``<!-- bench:<name>/<table>:start -->``
are `markdown` of one table (``docs/tables.py`` writes them; a test keeps them equal), and
``<!-- run:<name>:start -->`` is `provenance` of the file (what ran, when, under which load).

Every script starts with `parser` (``--json PATH`` and ``--table JSON`` once, here) and ends
with `emit`.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys

_STARTED: dict = {}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _uptime() -> str:
    """``uptime``'s line (the load averages over 1, 5, 15 minutes), or os.getloadavg()."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average: " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


class _Parser(argparse.ArgumentParser):
    def parse_args(self, args=None, namespace=None):
        a = super().parse_args(args, namespace)
        if getattr(a, "table", None):
            with open(a.table) as f:
                doc = json.load(f)
            if isinstance(doc, list) and self.rows:  # a list of row dicts (networks, bn_structure)
                header, table_row = self.rows
                print(header + "\n" + "\n".join(table_row(r) for r in doc))
                raise SystemExit(0)
            print(provenance(doc))
            for t in doc["tables"].values():
                print("\n" + markdown(t))
            raise SystemExit(0)
        return a


def parser(name: str, doc: str | None = None, rows=None) -> argparse.ArgumentParser:
    """The argument parser every benchmark starts from: its description (the first line of
    ``doc``, the script's docstring, shown whole under ``--help``), ``--json PATH`` (write the
    tables, `emit`) and ``--table JSON`` (print the tables of a file this benchmark wrote, and
    exit). Records the start (time, ``uptime``) that `emit` writes into the file.
    ``rows=(HEADER, table_row)``: the script's JSON is a list of row dicts instead (``networks``,
    ``bn_structure``), which ``--table`` prints as ``HEADER`` and one ``table_row(row)`` each."""
    _STARTED.update(started=_now(), load_at_start=_uptime())
    ap = _Parser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.rows = rows
    ap.add_argument("--json", default=None, metavar="PATH",
                    help=f"write the table(s) as JSON (docs/benchmarks/{name}.json; benchmarks/_tables.py)")
    ap.add_argument("--table", default=None, metavar="JSON", help="only print the table(s) of a JSON file this wrote")
    return ap


def versions(peers=()) -> dict[str, str]:
    """The installed versions of probgen, torch and each peer distribution (``"absent"``)."""
    from importlib import metadata
    out = {}
    for name in ("probgen", "torch", *peers):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def run_info(peers=()) -> dict:
    """What made the numbers: the exact command line, start and end, the load (``uptime``),
    the CPUs, and the versions (`versions`)."""
    argv = [os.path.relpath(sys.argv[0])] + sys.argv[1:] if sys.argv and sys.argv[0] else []
    return {"argv": "python " + " ".join(shlex.quote(a) for a in argv), **_STARTED, "finished": _now(),
            "load": _uptime(), "cpus": os.cpu_count(), "python": platform.python_version(), "versions": versions(peers)}


def provenance(doc: dict) -> str:
    """One Markdown sentence on where a file's numbers come from: the run (command, date,
    load, versions) or, for a file without one, its ``source``."""
    run = doc.get("run")
    if not run:
        return f"*{doc['source']}*" if doc.get("source") else f"*made by `{doc['command']}`*"
    load = run["load"].split("load average:")[-1].strip()
    vers = ", ".join(f"{k} {v}" for k, v in run["versions"].items())
    note = f" {doc['note'].rstrip('.')}." if doc.get("note") else ""
    return (f"*Run `{run['argv']}` on {run['finished'][:10]} ({run['cpus']} CPUs, load average {load} when it "
            f"finished; {vers}).{note}*")


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


def emit(path: str | None, command: str, tables: dict[str, dict], merge: bool = False, show: bool = True,
         peers=(), note: str | None = None) -> None:
    """Print every table as Markdown and, with ``path``, write them in the format, with
    `run_info` (``peers``: the peer libraries' distribution names, whose versions it records)
    and ``note`` (the run's sizes and settings, shown on the benchmarks page).

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
            doc = {"command": command, **({"note": note} if note else {}), "run": run_info(peers), "tables": tables}
            json.dump(doc, f, indent=1, ensure_ascii=False)
            f.write("\n")
        print("wrote", path)

