"""The comparison report: files, table values against the library, offline HTML, and rendering in headless Chromium."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import pytest

from mobilezoo.complexity import profile
from mobilezoo.complexity.tables import textbook_tables
from mobilezoo.formatting import fmt
from mobilezoo.report import ReportConfig, build_report, pareto_frontier, resolution_sweep, width_sweep

MODELS = ("mobilenet_v1_x0_25", "shufflenet_v2_x0_5")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _config() -> ReportConfig:
    """Two small models, one backend, two-point sweeps, one textbook table, tiny iteration counts."""
    return ReportConfig(
        models=MODELS,
        complexity_only=("googlenet",),
        backends=("eager",),
        sweep_backends=("eager",),
        sweeps=(
            width_sweep("MobileNetV1", {0.25: "mobilenet_v1_x0_25", 0.5: "mobilenet_v1_x0_5"}),
            resolution_sweep("MobileNetV1", "mobilenet_v1_x0_25", (96, 128)),
        ),
        tables=("5-2",),
        threads=1,
        warmup=1,
        iters=2,
        mode="test",
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> dict:
    """``ReportResult.to_dict()`` as JSON gives it back; built once per run (under xdist by the first worker)."""
    if worker_id == "master":
        return json.loads(json.dumps(build_report(tmp_path_factory.mktemp("report"), config=_config()).to_dict()))
    from filelock import FileLock  # a dependency of torch

    shared = tmp_path_factory.getbasetemp().parent  # common to this run's workers
    cache = shared / "mobilezoo-report-result.json"
    with FileLock(f"{cache}.lock"):
        if not cache.is_file():
            cache.write_text(json.dumps(build_report(shared / "mobilezoo-report", config=_config()).to_dict()))
        return json.loads(cache.read_text())


def test_files_written(report: dict) -> None:
    for key in ("markdown", "html", "json"):
        assert Path(report[key]).is_file() and Path(report[key]).stat().st_size > 0
    assert set(report["plots"]) == {"pareto_madds", "pareto_latency", "backends", "sweep_mobilenetv1"}
    md = Path(report["markdown"]).read_text()
    for png in map(Path, report["plots"].values()):
        assert png.parent == Path(report["out_dir"])
        assert png.read_bytes()[:8] == PNG_MAGIC
        assert f"]({png.name})" in md  # the Markdown links the PNGs beside it
    assert json.loads(Path(report["json"]).read_text()) == report["data"]


def test_tables_agree_with_the_library(report: dict) -> None:
    expected = [t.to_dict() for t in textbook_tables(["5-2"])]
    assert report["data"]["tables"] == expected
    md = Path(report["markdown"]).read_text()
    for row in expected[0]["rows"]:
        # the row's figures as `mobilezoo tables` formats them
        cells = [row["label"], fmt(row["top1_textbook"], 1), fmt(row["madds_m"]["textbook"])]
        cells += [fmt(row["madds_m"]["ours"]), f"{row['madds_m']['diff_pct']:+.2f}%", fmt(row["params_m"]["ours"])]
        cells.append(row["status"])
        line = next(li for li in md.splitlines() if li.startswith(f"| {row['label']} |"))
        for cell in cells:
            assert f"| {cell} |" in line, (cell, line)


def test_models_counted_and_timed(report: dict) -> None:
    data = report["data"]
    entries = {e["name"]: e for e in data["models"]}
    assert set(entries) == {*MODELS, "googlenet"}
    for name in (*MODELS, "googlenet"):
        assert entries[name]["madds_m"] == pytest.approx(profile(name).madds / 1e6)
    for name in MODELS:
        (lat,) = entries[name]["latencies"]
        assert lat["backend"] == "eager" and lat["error"] is None and lat["median_ms"] > 0
        assert entries[name]["fastest_exact"] == "eager"
    assert entries["googlenet"]["latencies"] == []  # complexity only
    sweeps = {(s["family"], s["kind"]): s["rows"] for s in data["sweeps"]}
    width = sweeps[("MobileNetV1", "width")]
    assert [r["multiplier"] for r in width] == [0.25, 0.5]
    assert width[1]["madds_m"] == pytest.approx(profile("mobilenet_v1_x0_5").madds / 1e6)
    res = sweeps[("MobileNetV1", "resolution")]
    assert [r["resolution"] for r in res] == [96, 128]
    assert res[0]["madds_m"] == pytest.approx(profile("mobilenet_v1_x0_25", resolution=96).madds / 1e6)
    assert all(r["latencies"][0]["median_ms"] > 0 for r in width + res)
    md = Path(report["markdown"]).read_text()
    assert "Table 5-13" in md and "NOT re-measured" in md
    assert "| 32.9 | 60 |" in md  # the textbook's ShuffleNet V1 detection row, reproduced


class _Refs(HTMLParser):
    """Collects every URL-bearing attribute and the inline CSS."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str, str]] = []
        self.css = ""
        self.imgs = 0
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.imgs += tag == "img"
        self._in_style = tag == "style"
        for key, value in attrs:
            if key in ("src", "href", "srcset", "poster", "data", "action", "background", "xlink:href"):
                self.urls.append((tag, key, value or ""))
            if key == "style":
                self.css += value or ""

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.css += data

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False


def test_html_is_self_contained(report: dict) -> None:
    text = Path(report["html"]).read_text()
    parser = _Refs()
    parser.feed(text)
    assert parser.imgs == len(report["plots"])
    assert parser.urls, "expected images and in-page links"
    for tag, key, url in parser.urls:
        assert url.startswith(("data:", "#")), f"<{tag} {key}={url[:60]!r}> is an external resource"
        if url.startswith("data:"):
            assert url.startswith("data:image/png;base64,")
            assert base64.b64decode(url.split(",", 1)[1])[:8] == PNG_MAGIC
    css_urls = re.findall(r"url\(\s*['\"]?([^)'\"]*)", parser.css) + re.findall(r"@import", parser.css)
    assert all(u.startswith(("data:", "#")) for u in css_urls), css_urls
    assert "<link" not in text and "<iframe" not in text and "<script src" not in text


def _images_loaded(browser: str, page: Path, profile_dir: Path) -> tuple[int, int]:
    """(loaded, total) images of ``page`` as headless Chromium reports them in <body data-images>."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
    flags += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
    out = subprocess.run(
        [browser, *flags, f"--user-data-dir={profile_dir}", "--dump-dom", page.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    m = re.search(r'<body[^>]*data-images="(\d+)/(\d+)"', out.stdout)
    assert m, f"no image count in the dumped DOM: {out.stdout[:300]!r} {out.stderr[-500:]!r}"
    return int(m.group(1)), int(m.group(2))


def test_html_renders_its_images_in_chromium(report: dict, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (CI installs it: apt-get install chromium)")
    n = len(report["plots"])
    assert _images_loaded(browser, Path(report["html"]), tmp_path / "profile") == (n, n)
    # the control: the same counting script sees a broken image
    html = Path(report["html"]).read_text()
    broken = html.replace("data:image/png;base64,", "data:image/png;base64,AAAA", 1)
    (tmp_path / "broken.html").write_text(broken)
    assert _images_loaded(browser, tmp_path / "broken.html", tmp_path / "profile") == (n - 1, n)


def test_pareto_frontier() -> None:
    # (cost, accuracy): lower cost and higher accuracy are better
    pts = [(10.0, 60.0), (5.0, 50.0), (20.0, 55.0), (40.0, 70.0), (10.0, 58.0), (3.0, 50.0)]
    assert pareto_frontier(pts) == [5, 0, 3]
    assert pareto_frontier([]) == []
    assert pareto_frontier([(1.0, 1.0)]) == [0]


def test_bad_input_raises_before_measuring(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown model 'mobilenet_v9'"):
        build_report(tmp_path / "a", models=["mobilenet_v9"], config=_config())
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'"):
        build_report(tmp_path / "a", config=ReportConfig(models=MODELS, backends=("tensorrt",)))
    with pytest.raises(ValueError, match=r"unknown table\(s\) \['5-99'\]"):
        build_report(tmp_path / "a", config=ReportConfig(models=MODELS, tables=("5-99",)))
    with pytest.raises(ValueError, match="iters must be an integer >= 1, got 0"):
        build_report(tmp_path / "a", config=ReportConfig(models=MODELS, iters=0))
    with pytest.raises(ValueError, match="list of names"):
        build_report(tmp_path / "a", models="mobilenet_v2", config=_config())
    afile = tmp_path / "file"
    afile.write_text("")
    with pytest.raises(ValueError, match="is not a directory"):
        build_report(afile, config=_config())
    assert not (tmp_path / "a").exists()


def test_cli_prints_the_report_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import mobilezoo.report
    from mobilezoo.cli import main

    seen = {}
    html = tmp_path / "r" / "report.html"
    fake = SimpleNamespace(
        html=html, markdown=html.with_suffix(".md"), json=html.with_suffix(".json"), plots={},
        data=SimpleNamespace(seconds={"total": 1.0}),
    )  # fmt: skip

    def fake_build(out, *, models=None, config=None, progress=None):
        seen.update(out=out, models=models, config=config)
        return fake

    monkeypatch.setattr(mobilezoo.report, "build_report", fake_build)
    argv = ["report", "--out", "somewhere", "--quick", "--models", "mobilenet_v2", "--backends", "eager"]
    assert main([*argv, "--iters", "3"]) == 0
    assert capsys.readouterr().out.strip().endswith(str(html))
    assert seen["out"] == "somewhere" and seen["models"] == ["mobilenet_v2"]
    assert seen["config"].mode == "quick" and seen["config"].backends == ("eager",) and seen["config"].iters == 3
    monkeypatch.undo()
    out = tmp_path / "x"
    assert main(["report", "--quick", "--backends", "nope", "--out", str(out)]) == 2  # the real one refuses
    assert "unknown backend 'nope'" in capsys.readouterr().err
    assert not out.exists()
