"""``mobilezoo.select`` with a fake timer: no real timing, so the decisions are checked exactly."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from mobilezoo.selection import Budget, Candidate, Measurement, candidates, select
from mobilezoo.selection.search import MARGIN

BACKENDS = ("eager", "onnxruntime")
RATE = {"eager": 40.0, "onnxruntime": 100.0}  # fake MAdds per ms
OVERHEAD_MS = 0.3


def cand(model: str, family: str, res: int, top1: float, madds: float, params: int = 10**6) -> Candidate:
    return Candidate(model, family, res, top1, params, madds, madds / 50, f"{model}_{res}", "test")


def fake_latency(c: Candidate, backend: str) -> float:
    return c.madds_m / RATE[backend] + OVERHEAD_MS


class FakeTimer:
    """Measures by formula and counts what it was asked, per candidate."""

    def __init__(self, latency=fake_latency, noisy=()) -> None:
        self.latency, self.noisy, self.calls = latency, set(noisy), Counter()

    def __call__(self, c: Candidate, backends, batch_size: int, threads: int) -> dict[str, Measurement]:
        self.calls[c.key] += 1
        out = {}
        for b in backends:
            ms = self.latency(c, b) * batch_size
            out[b] = Measurement(b, "fp32", ms, ms * 1.1, noisy=c.key in self.noisy)
        return out


POOL = [
    cand("big_a", "A", 224, 78.0, 1200.0),
    cand("big_a", "A", 192, 77.0, 880.0),
    cand("mid_a", "A", 224, 75.0, 600.0),
    cand("mid_a", "A", 160, 72.0, 306.0),
    cand("small_a", "A", 224, 68.0, 150.0),
    cand("small_a", "A", 128, 62.0, 49.0),
    cand("huge_b", "B", 224, 76.0, 15000.0, params=138 * 10**6),
    cand("mid_b", "B", 224, 74.0, 300.0),
    cand("small_b", "B", 224, 66.0, 60.0),
    cand("tiny_b", "B", 96, 50.0, 11.0),
    cand("only_c", "C", 224, 70.0, 5000.0),
]


def best_within(limit: float, pool=POOL, family: str | None = None) -> Candidate | None:
    fit = [c for c in pool if min(fake_latency(c, b) for b in BACKENDS) <= limit]
    fit = [c for c in fit if family is None or c.family == family]
    return max(fit, key=lambda c: c.top1, default=None)


@pytest.mark.parametrize("limit", [0.5, 3.5, 4.0, 6.5, 9.0, 13.0, 200.0])
def test_pick_is_the_most_accurate_candidate_within_budget(limit: float) -> None:
    timer = FakeTimer()
    s = select(Budget(latency_ms=limit, threads=2), candidates_=POOL, backends=BACKENDS, measure=timer, use_cache=False)
    want = best_within(limit)
    assert (s.pick.candidate if s.pick else None) == want
    if s.pick is not None:
        assert s.pick.backend == "onnxruntime" and s.pick.fits
        assert s.pick.median_ms == pytest.approx(fake_latency(want, "onnxruntime"))
        # the runner-up of every other family is that family's most accurate fitting candidate
        for family in {c.family for c in POOL} - {want.family}:
            expected = best_within(limit, family=family)
            got = s.runners_up.get(family)
            assert (got.candidate if got else None) == expected, family


def test_prunes_what_cannot_win() -> None:
    timer = FakeTimer()
    s = select(Budget(latency_ms=3.5, threads=2), candidates_=POOL, backends=BACKENDS, measure=timer, use_cache=False)
    assert s.pick.candidate.key == "mid_b@224"  # 300 MAdds / 100 + 0.3 = 3.3 ms
    skipped = dict(s.skipped)
    # VGG-sized candidates are skipped from the MAdds bound, without being measured
    assert skipped["huge_b@224"].startswith("MAdds bound") and "huge_b@224" not in timer.calls
    assert "only_c@224" in skipped
    # nothing less accurate than a family's fitting candidate is measured
    for c in POOL:
        fit = s.runners_up.get(c.family) or (s.pick if s.pick.candidate.family == c.family else None)
        if fit is not None and c.top1 < fit.candidate.top1:
            assert c.key not in timer.calls, c.key
    # every skipped candidate really is over budget (the bounds never drop a winner)
    for key in skipped:
        c = next(c for c in POOL if c.key == key)
        assert min(fake_latency(c, b) for b in BACKENDS) > 3.5, key
    assert s.n_measured == len(timer.calls) < len(POOL)
    assert s.n_candidates == len(POOL)


def test_a_smaller_net_of_a_family_over_budget_rules_out_the_larger_ones() -> None:
    timer = FakeTimer()
    # x@128 (4.3 ms) is over a 3 ms budget, so x@224 (5.3 ms), no smaller, is skipped although its MAdds bound
    # (500 / (93 x RATE_SLACK) = 1.8 ms) would allow it
    pool = [cand("x", "A", 128, 73.0, 400.0), cand("x", "A", 224, 72.0, 500.0), cand("y", "B", 224, 60.0, 50.0)]
    s = select(Budget(latency_ms=3.0, threads=2), candidates_=pool, backends=BACKENDS, measure=timer, use_cache=False)
    assert s.pick.candidate.key == "y@224"
    assert dict(s.skipped)["x@224"] == "no smaller than x@128, measured over budget (4.30 ms)"
    assert "x@224" not in timer.calls


def test_impossible_budget_names_the_cheapest_candidate() -> None:
    timer = FakeTimer()
    s = select(Budget(latency_ms=0.05, threads=2), candidates_=POOL, backends=BACKENDS, measure=timer, use_cache=False)
    assert s.pick is None and not s.runners_up
    assert "tiny_b@96" in s.message and "no candidate meets 0.05 ms per call" in s.message
    assert f"{fake_latency(POOL[9], 'onnxruntime'):.2f} ms" in s.message
    with pytest.raises(ValueError, match="max_params_m must be a positive number, got -1"):
        select(Budget(latency_ms=1, max_params_m=-1), candidates_=POOL, backends=BACKENDS, measure=timer)


def test_caps_are_counted_not_measured() -> None:
    timer = FakeTimer()
    s = select(Budget(latency_ms=200, threads=2, max_params_m=50, max_madds_m=1000), candidates_=POOL,
               backends=BACKENDS, measure=timer, use_cache=False)  # fmt: skip
    assert s.pick.candidate.key == "big_a@192"  # huge_b breaks the params cap, big_a@224 the MAdds cap
    reasons = dict(s.skipped)
    assert reasons["huge_b@224"] == "params 138.00M > 50M" and reasons["big_a@224"] == "MAdds 1200.0M > 1000M"
    assert "huge_b@224" not in timer.calls
    s = select(Budget(latency_ms=200, threads=2, max_params_m=0.5), candidates_=POOL, backends=BACKENDS,
               measure=timer, use_cache=False)  # fmt: skip
    assert s.pick is None and "every one breaks a params/MAdds/memory cap" in s.message


def test_throughput_budget_and_batch_size() -> None:
    timer = FakeTimer()
    # 8 images per call; >= 1000 images/s means <= 8 ms per call, i.e. <= 1 ms per image in the fake timer
    s = select(Budget(throughput=1000, batch_size=8, threads=2), candidates_=POOL, backends=BACKENDS, measure=timer,
               use_cache=False)  # fmt: skip
    assert s.budget.limit_ms == 8.0
    assert s.pick.candidate == best_within(1.0)


def test_the_cache_answers_a_second_question_without_measuring(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MOBILEZOO_CACHE_DIR", str(tmp_path))
    timer = FakeTimer()
    first = select(Budget(latency_ms=3.5, threads=2), candidates_=POOL, backends=BACKENDS, measure=timer)
    asked = timer.calls.copy()
    assert first.n_measured == len(asked) > 0 and first.n_cached == 0
    assert asked["mid_a@160"] == 2  # 3.36 ms, within MARGIN of 3.5: measured twice
    again = select(Budget(latency_ms=3.5, threads=2), candidates_=POOL, backends=BACKENDS, measure=timer)
    assert timer.calls == asked  # nothing measured again, not even the candidate close to the budget
    assert again.n_measured == 0 and again.n_cached == first.n_measured
    assert again.pick.candidate == first.pick.candidate
    # another budget measures only candidates not seen yet
    select(Budget(latency_ms=0.5, threads=2), candidates_=POOL, backends=BACKENDS, measure=timer)
    assert all(timer.calls[k] == n for k, n in asked.items()) and len(timer.calls) > len(asked)
    # another thread count is another setting: measured again
    before = sum(timer.calls.values())
    select(Budget(latency_ms=3.5, threads=1), candidates_=POOL, backends=BACKENDS, measure=timer)
    assert sum(timer.calls.values()) > before


def test_a_figure_close_to_the_budget_is_measured_again_and_flagged_when_it_stays_close(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MOBILEZOO_CACHE_DIR", str(tmp_path))
    timer = FakeTimer()
    limit = fake_latency(POOL[7], "onnxruntime") * (1 + MARGIN / 2)  # mid_b sits within the margin
    s = select(Budget(latency_ms=limit, threads=2), candidates_=POOL, backends=BACKENDS, measure=timer, use_cache=False)
    assert s.pick.candidate.key == "mid_b@224" and timer.calls["mid_b@224"] == 2
    assert not s.stable and "unstable" in s.notes[0]
    # noisy figures are measured again too; the second stays cached, flagged, so the pick stays marked unstable
    monkeypatch.setenv("MOBILEZOO_CACHE_DIR", str(tmp_path / "empty"))
    noisy = FakeTimer(noisy={"mid_b@224"})
    s = select(Budget(latency_ms=3.5, threads=2), candidates_=POOL, backends=BACKENDS, measure=noisy)
    assert noisy.calls["mid_b@224"] == 2 and s.pick.candidate.key == "mid_b@224" and not s.stable
    again = select(Budget(latency_ms=3.5, threads=2), candidates_=POOL, backends=BACKENDS, measure=noisy)
    assert noisy.calls["mid_b@224"] == 2 and again.n_measured == 0 and not again.stable


def test_bad_budgets() -> None:
    with pytest.raises(ValueError, match="give one budget"):
        Budget().validate()
    with pytest.raises(ValueError, match="give one budget"):
        Budget(latency_ms=1, throughput=10).validate()
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        Budget(latency_ms=1, batch_size=0).validate()
    with pytest.raises(ValueError, match=r"unknown backend\(s\) \['tflite'\]"):
        select(Budget(latency_ms=1), candidates_=POOL, backends=("tflite",), measure=FakeTimer())


def test_result_json_and_chart(tmp_path) -> None:
    s = select(Budget(latency_ms=6.5, threads=2), candidates_=POOL, backends=BACKENDS, measure=FakeTimer(),
               use_cache=False)  # fmt: skip
    d = json.loads(json.dumps(s.to_dict()))
    assert d["pick"]["key"] == s.pick.candidate.key and d["budget"]["limit_ms"] == 6.5
    assert d["frontier"][0] == min(s.measured, key=lambda c: c.median_ms).candidate.key
    front = s.frontier()
    assert [c.median_ms for c in front] == sorted(c.median_ms for c in front)
    assert [c.candidate.top1 for c in front] == sorted(c.candidate.top1 for c in front)
    png = s.plot(tmp_path / "pick.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def registry_candidates() -> list[Candidate]:
    return candidates()


def test_candidates_cover_the_published_grids(registry_candidates) -> None:
    by_family = Counter(c.family for c in registry_candidates)
    assert by_family["MobileNetV1"] == 16  # the TF-slim 4 x 4 width x resolution grid
    assert by_family["MobileNetV2"] == 22  # 1.4 and 1.3 at 224, then 0.35-1.0 x 96-224
    assert sum(c.model.startswith("mnasnet_a1") for c in registry_candidates) == 25  # 0.35-1.4 x 96-224
    keys = {c.key for c in registry_candidates}
    assert {"mobilenet_v1_x0_25@128", "mobilenet_v3_small@224", "squeezenet1_0@227", "nasnet_a_mobile@224"} <= keys
    assert [c.top1 for c in registry_candidates] == sorted((c.top1 for c in registry_candidates), reverse=True)
    v1 = next(c for c in registry_candidates if c.key == "mobilenet_v1_x0_5@128")
    assert v1.params == 1331592 and v1.madds_m == pytest.approx(49.16, abs=0.01) and v1.top1 == 56.3


def test_int8_choices_are_labelled_with_their_agreement() -> None:
    def latency(c: Candidate, backend: str) -> float:
        return c.madds_m / (300.0 if backend == "onnxruntime-int8" else RATE[backend]) + OVERHEAD_MS

    class Int8Timer(FakeTimer):
        def __call__(self, c, backends, batch_size, threads):
            out = super().__call__(c, backends, batch_size, threads)
            return {b: Measurement(b, "int8" if "int8" in b else "fp32", m.median_ms, m.p90_ms) for b, m in out.items()}

    checked = []

    def check(choice):
        checked.append(choice.candidate.key)
        return {"images": 256, "agreement": 97.5}

    s = select(Budget(latency_ms=3.5, threads=2), candidates_=POOL, backends=(*BACKENDS, "onnxruntime-int8"),
               measure=Int8Timer(latency), use_cache=False, int8_check=check)  # fmt: skip
    assert s.pick.candidate.key == "big_a@192" and s.pick.precision == "int8"  # 880 / 300 + 0.3 = 3.23 ms
    assert s.pick.int8_agreement == {"images": 256, "agreement": 97.5}
    assert "published top-1 is an fp32 figure; int8 and fp32 agree on 97.5%" in s.message
    assert checked[0] == "big_a@192" and all(s.runners_up[k].candidate.key in checked for k in s.runners_up)


def test_backends_far_behind_on_a_family_are_not_measured_on_its_other_candidates() -> None:
    asked: list[tuple[str, tuple[str, ...]]] = []

    def timer(c, backends, batch_size, threads):
        asked.append((c.key, tuple(backends)))
        return FakeTimer()(c, backends, batch_size, threads)

    select(Budget(latency_ms=3.5, threads=2), candidates_=POOL, backends=BACKENDS, measure=timer, use_cache=False)
    seen: set[str] = set()
    for key, backends in asked:
        family = next(c.family for c in POOL if c.key == key)
        # eager runs at 40 MAdds/ms against onnxruntime's 100: 2.5x slower, so only a family's first candidate has it
        assert backends == (("onnxruntime",) if family in seen else BACKENDS), key
        seen.add(family)
    assert len(seen) == 2 and len(asked) > len(seen)
