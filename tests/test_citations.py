"""Everything a user reads cites what the user has: the papers, their tables, public sources, or the package's files.

The developer reference documents (NOTES.md, TEXTBOOK.md, ...) do not ship with the package, so no model card note,
textbook table row, report text, ``mobilezoo tables --errata`` output or docstring shown by ``help()`` may point at them
("NOTES.md item 12"). A ``*.md`` mention is allowed only for a file the package ships, a file the report itself writes,
a public repository's file cited as ``owner/repo path/FILE.md``, and, in docstrings only, a file of this repository.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import re
from importlib import resources
from pathlib import Path

import pytest

import mobilezoo
from mobilezoo.complexity.tables import textbook_tables
from mobilezoo.complexity.textbook import ERRATA, TABLES
from mobilezoo.registry import list_models, model_card, paper_rows

# the developer documents (and their numbered items) that live outside the package
DEV_DOCS = re.compile(
    r"NOTES\.md|TEXTBOOK\.md|NEW_MODELS|GUIDELINES\.md|RECIPES\.md|DETECTION\.md|shared/reference|\bitems? \d+",
    re.IGNORECASE,
)
# a .md file, optionally cited with the public repository that holds it ("owner/repo path/README.md")
MD_FILE = re.compile(r"(?P<repo>(?:github\.com/)?[\w.-]+/[\w.-]+ )?(?P<path>[\w./-]*\w\.md)\b")
WRITTEN_BY_THE_PACKAGE = {"report.md"}  # `mobilezoo report` writes it: the user has it
REPO_ROOT = Path(__file__).resolve().parents[1]


def _shipped() -> set[str]:
    """The package's files, as paths relative to the package (``assets/README.md``, ...)."""
    root = resources.files("mobilezoo")
    out: set[str] = set()

    def walk(node, prefix: str) -> None:
        for child in node.iterdir():
            if child.is_dir():
                walk(child, f"{prefix}{child.name}/")
            else:
                out.add(prefix + child.name)

    walk(root, "")
    return out


SHIPPED = _shipped()


def unfollowable(text: str, *, repo_files: bool = False) -> list[str]:
    """The references in ``text`` a user of the installed package cannot follow (empty: all fine)."""
    bad = [m.group(0) for m in DEV_DOCS.finditer(text)]
    for m in MD_FILE.finditer(text):
        path = m.group("path")
        if DEV_DOCS.search(path):
            continue  # already reported
        ok = (
            m.group("repo") is not None
            or path in WRITTEN_BY_THE_PACKAGE
            or path.removeprefix("mobilezoo/") in SHIPPED
            or (repo_files and (REPO_ROOT / path).is_file())
        )
        if not ok:
            bad.append(m.group(0))
    return bad


def test_the_checker_catches_what_it_should() -> None:
    assert unfollowable("with the 3 FC layers 15,470.3M (NOTES.md item 12)") == ["NOTES.md", "item 12"]
    assert unfollowable("see ``shared/reference/GUIDELINES.md`` §3") == ["shared/reference", "GUIDELINES.md"]
    assert unfollowable("details in DESIGN.md") == ["DESIGN.md"]
    assert unfollowable("benchmarks/results/int8_vs_fp32.md") == ["benchmarks/results/int8_vs_fp32.md"]
    assert unfollowable("benchmarks/results/int8_vs_fp32.md", repo_files=True) == []
    assert unfollowable("megvii-model/ShuffleNet-Series ShuffleNetV1/README.md: 138M") == []
    assert unfollowable("provenance in assets/README.md; writes report.md") == []
    assert unfollowable("Zhang et al. 2018, Table 1 counts without the FC layer") == []


def test_model_cards_and_paper_rows() -> None:
    for name in list_models():
        card = model_card(name)
        assert not unfollowable(card.notes), (name, unfollowable(card.notes))
    for row in paper_rows():
        for text in (row.notes, row.source, row.counted_on):
            assert not unfollowable(text), (row.variant, unfollowable(text))


def test_textbook_rows() -> None:
    for table in (*TABLES, ERRATA):
        for text in (table.title, table.convention):
            assert not unfollowable(text), (table.id, text)
        for spec in table.rows:
            for text in (spec.flag or "", spec.note):
                assert not unfollowable(text), (table.id, spec.label, unfollowable(text))


def test_tables_errata_output_and_the_reports_tables(capsys: pytest.CaptureFixture[str]) -> None:
    """``mobilezoo tables --errata`` (text and JSON) and the report's table sections, from one regeneration."""
    from mobilezoo.cli.complexity import _print_table
    from mobilezoo.report.sections import textbook_table

    tables = textbook_tables(include_errata=True)  # what `mobilezoo tables --errata` prints
    for table in tables:
        _print_table(table)
    out = capsys.readouterr().out
    assert "Table 5-10" in out and "Table errata" in out and "[1]" in out  # the flags and notes are in it
    assert not unfollowable(out), unfollowable(out)
    assert not unfollowable(json.dumps([t.to_dict() for t in tables]))
    for table in tables:
        rendered = textbook_table(table)
        text = "\n".join([rendered.caption, *rendered.notes, *(" ".join(r) for r in rendered.rows)])
        assert not unfollowable(text), (table.id, unfollowable(text))


def _public_objects(module) -> list:
    objs = [module]
    for _, obj in inspect.getmembers(module, lambda o: inspect.isclass(o) or inspect.isfunction(o)):
        if getattr(obj, "__module__", None) != module.__name__:
            continue
        objs.append(obj)
        if inspect.isclass(obj):
            objs += [m for _, m in inspect.getmembers(obj) if inspect.isfunction(m) or isinstance(m, property)]
    return objs


def test_docstrings_shown_by_help() -> None:
    names = [m.name for m in pkgutil.walk_packages(mobilezoo.__path__, "mobilezoo.") if m.name != "mobilezoo.__main__"]
    assert "mobilezoo.complexity.textbook" in names and "mobilezoo.guidelines" in names
    bad = {}
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError:  # an optional dependency (openvino): nothing of it is shown without it
            continue
        for obj in _public_objects(module):
            found = unfollowable(inspect.getdoc(obj) or "", repo_files=True)
            if found:
                bad[f"{name}.{getattr(obj, '__qualname__', '')}"] = found
    assert not bad, bad
