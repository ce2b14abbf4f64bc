"""Issue 28's regime report (benchmarks/regime_report.py): paired differences to plain and to random
batches, recomputed by hand from made-up runs, and the named-recipe bar on its edges."""
import importlib.util
import json
import sys

import numpy as np
import pytest

from ramen.bench.common import benchmarks_dir

ROOT = benchmarks_dir()
pytestmark = pytest.mark.skipif(ROOT is None, reason="the study's reports live in a checkout's benchmarks/")


@pytest.fixture(scope="module")
def regime():
    sys.path.insert(0, str(ROOT))  # regime_report imports its sibling accuracy_report
    spec = importlib.util.spec_from_file_location("ramen_benchmark_regime_report", ROOT / "regime_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_run(dataset, arm, seed, heldout_p1, heldout_psp1, test_p1=0.4, test_psp1=0.3, epochs=3):
    """A result.json as the study writes it, with per-epoch curves ending at the given metrics."""
    def curve(p1, psp1):
        return [{"epoch": e + 1, "P@1": p1 - 0.01 * (epochs - 1 - e), "PSP@1": psp1 - 0.01 * (epochs - 1 - e)}
                for e in range(epochs)]
    return {"dataset": dataset, "arm": arm, "seed": seed, "metrics": {"P@1": test_p1, "PSP@1": test_psp1},
            "curves": {"heldout": curve(heldout_p1, heldout_psp1), "test": curve(test_p1, test_psp1)}}


def write_runs(root, runs):
    for r in runs:
        d = root / r["dataset"] / r["arm"] / f"seed{r['seed']}"
        d.mkdir(parents=True)
        (d / "result.json").write_text(json.dumps(r))


def table_rows(text):
    """(arm, control, epochs) -> the cells of each Markdown table row in `text`."""
    return {tuple(cells[:3]): cells for line in text.splitlines() if line.startswith("| ")
            for cells in [[c.strip() for c in line.strip("|").split("|")]]}


def test_bar_needs_a_point_beyond_one_sd_on_both_metrics_over_three_seeds(regime):
    assert regime.bar_verdict([0.02, 0.02, 0.02], [0.015, 0.012, 0.018]) == "**yes**"
    assert regime.bar_verdict([0.02, 0.02], [0.02, 0.02]).startswith("open (2 of 3")
    assert regime.bar_verdict([0.02, 0.02, 0.02], [0.009, 0.009, 0.009]) == "no"  # PSP@1 under a point
    assert regime.bar_verdict([0.05, -0.02, 0.02], [0.02, 0.02, 0.02]) == "no"  # P@1 mean 1.67 < sd 3.5
    assert regime.bar_verdict([-0.02, -0.02, -0.02], [-0.02, -0.02, -0.02]) == "no"


def test_paired_deltas_match_each_seed_with_its_own_control(regime):
    runs = [fake_run("d", "a", s, 0.5 + s / 100, 0.4) for s in (0, 1, 2)]
    controls = [fake_run("d", "c", s, 0.45, 0.41) for s in (0, 2)]  # seed 1 has no control yet
    assert regime.paired_deltas(runs, controls, "heldout", "P@1") == pytest.approx([0.05, 0.07])
    assert regime.paired_deltas(runs, controls, "heldout", "PSP@1") == pytest.approx([-0.01, -0.01])
    assert regime.paired_deltas(runs, controls, "test", "P@1") == pytest.approx([0.0, 0.0])


def test_report_compares_with_plain_and_ngame_with_random_batches(regime, tmp_path):
    runs = tmp_path / "runs"
    rng = np.random.default_rng(0)
    plain = {s: (0.40 + rng.uniform(0, 0.01), 0.30 + rng.uniform(0, 0.01)) for s in range(3)}
    made = []
    for s, (p1, psp1) in plain.items():
        made += [fake_run("d", "plain+bf16+e3", s, p1, psp1),
                 fake_run("d", "good+bf16+e3", s, p1 + 0.02 + s / 1000, psp1 + 0.015),  # clears the bar
                 fake_run("d", "plain+ngame30+bf16+e3", s, p1 - 0.01, psp1 + 0.005)]
    made.append(fake_run("d", "good+bf16+e9", 0, 0.9, 0.9, epochs=9))  # no plain at 9 epochs: no row
    write_runs(runs, made)
    (runs / "d" / "zeroshot.json").write_text(json.dumps(
        {"heldout": {"metrics": {"P@1": 0.2, "PSP@1": 0.1}}, "test": {"metrics": {"P@1": 0.25, "PSP@1": 0.15}}}))
    out = tmp_path / "regime.md"
    regime.write(runs, out)
    text = out.read_text()
    assert "held-out P@1 20.00 / PSP@1 10.00, test P@1 25.00 / PSP@1 15.00" in text
    versus_plain, versus_random = text.split("NGAME cluster batches against random batches")
    rows = table_rows(versus_plain)
    good = rows[("good+bf16", "plain+bf16", "3")]
    deltas = [100 * (0.02 + s / 1000) for s in range(3)]
    assert good[3] == "3"
    assert good[4] == f"+{np.mean(deltas):.2f} ± {np.std(deltas, ddof=1):.2f}"
    assert good[5].startswith("+1.50") and good[-1] == "**yes**"
    ngame_vs_plain = rows[("plain+ngame30+bf16", "plain+bf16", "3")]
    assert ngame_vs_plain[4].startswith("-1.00") and ngame_vs_plain[-1] == "no"
    assert ("good+bf16", "plain+bf16", "9") not in rows
    ngame = table_rows(versus_random)[("plain+ngame30+bf16", "plain+bf16", "3")]
    assert ngame[4:6] == ["-1.00 ± 0.00", "+0.50 ± 0.00"] and len(ngame) == 10  # no bar column
    assert good[6] == good[7] == "-"  # no per-query terms recorded: no interval
    assert (tmp_path / "regime_d_curves.png").exists()


def per_query(dataset, arm, seed, hit, gain, best):
    split = {"hit": list(hit), "gain": list(gain), "best": list(best)}
    return {"dataset": dataset, "arm": arm, "seed": seed, "heldout": split, "test": split}


def test_query_interval_is_a_bootstrap_of_the_per_query_differences(regime):
    n = 200
    rng = np.random.default_rng(1)
    best = rng.uniform(1, 3, n)
    runs = [fake_run("d", "a+e3", s, 0.5, 0.4) for s in (0, 1)]
    controls = [fake_run("d", "c+e3", s, 0.5, 0.4) for s in (0, 1, 2)]
    terms = {}
    for s in (0, 1):
        a_hit, c_hit = rng.integers(0, 2, n), rng.integers(0, 2, n)
        terms[("d", "a+e3", s)] = per_query("d", "a+e3", s, a_hit, a_hit * best, best)
        terms[("d", "c+e3", s)] = per_query("d", "c+e3", s, c_hit, c_hit * best, best)
    got = regime.query_interval(runs, controls, "heldout", terms)
    d_hit = np.mean([np.subtract(terms[("d", "a+e3", s)]["heldout"]["hit"], terms[("d", "c+e3", s)]["heldout"]["hit"])
                     for s in (0, 1)], axis=0)
    se = d_hit.std() / np.sqrt(n)
    low, high = got["P@1"]
    assert low < d_hit.mean() < high and abs((high - low) - 2 * 1.96 * se) < 0.25 * (high - low)
    assert regime.query_interval(runs, controls, "heldout", terms) == got  # seeded
    swapped = regime.query_interval(controls[:2], runs, "heldout", terms)
    assert swapped["P@1"][0] == pytest.approx(-high, abs=0.02) and swapped["P@1"][1] == pytest.approx(-low, abs=0.02)
    # every query one hit ahead: the interval is that point; PSP@1's is the ratio of the sums
    ones = {("d", "a+e3", 0): per_query("d", "a+e3", 0, np.ones(n), best, best),
            ("d", "c+e3", 0): per_query("d", "c+e3", 0, np.zeros(n), np.zeros(n), best)}
    exact = regime.query_interval(runs, controls, "heldout", ones)
    assert exact["P@1"] == pytest.approx((1.0, 1.0)) and exact["PSP@1"] == pytest.approx((1.0, 1.0))
    assert regime.query_interval(runs, controls, "heldout", {}) is None


def test_ngame_at_the_study_budget_is_compared_on_test_with_random_batches_and_plain(regime, tmp_path):
    runs = tmp_path / "runs"
    made = []
    for s in range(3):
        for arm, p1 in (("plain", 0.30), ("plain+ngame10", 0.32 + s / 100), ("ramen", 0.05), ("ramen+ngame10", 0.10)):
            r = fake_run("s", arm, s, 0.0, 0.0, test_p1=p1, test_psp1=p1 / 2)
            del r["curves"]  # the 10-epoch arms record no per-epoch curves
            made.append(r)
    made.append(fake_run("s", "allneg+ngame10", 0, 0, 0))  # its control never ran: no row
    for s in range(2):  # plain's twin with held-out curves, 2 seeds: the held-out columns pair those
        made[4 * s + 1]["curves"] = {"heldout": [{"epoch": 10, "P@1": 0.40 + s / 100, "PSP@1": 0.20}]}
        made.append(fake_run("s", "plain+e10", s, 0.37, 0.21, epochs=10))
    write_runs(runs, made)
    regime.write(runs, tmp_path / "regime.md")
    rows = table_rows((tmp_path / "regime.md").read_text())
    ngame = next(v for k, v in rows.items() if k[0] == "plain+ngame10")
    deltas = [100 * (0.02 + s / 100) for s in range(3)]
    assert ngame[1:4] == ["3", "3", f"+{np.mean(deltas):.2f} ± {np.std(deltas, ddof=1):.2f}"]
    assert ngame[5] == "3" and ngame[6] == ngame[3]  # plain is the control of plain+ngame10
    held = [100 * (0.03 + s / 100) for s in range(2)]
    assert ngame[8:11] == ["2", f"+{np.mean(held):.2f} ± {np.std(held, ddof=1):.2f}", "-1.00 ± 0.00"]
    ramen = next(v for k, v in rows.items() if k[0] == "ramen+ngame10")
    assert ramen[3] == "+5.00 ± 0.00" and ramen[6] == "-20.00 ± 0.00" and ramen[8:11] == ["0", "-", "-"]
    budget = (tmp_path / "regime.md").read_text().split("RAMEN-NGAME against NGAME batches alone")[0]
    assert not any(k[0] == "allneg+ngame10" for k in table_rows(budget))  # allneg, its control, never ran


def test_the_bar_counts_exactly_one_point_of_k_over_n(regime):
    one = 105 / 300 - 102 / 300  # 0.00999999999999995: one point, as a metric k/n gives it
    assert regime.bar_verdict([one] * 3, [one] * 3) == "**yes**"


def test_ngame_arms_of_every_length_pair_with_their_random_batch_twins(regime):
    """+ngame10, +ngame30 and +ngame60 each name NGAME batches: the control is the same arm without
    them, at the same length; an arm whose name merely contains the text (no such lever) is not paired."""
    arms = {"plain+bf16": {10: [], 30: [], 60: []}, "plain+ngame30+bf16": {30: []}, "plain+ngame60+bf16": {60: []},
            "allneg+lambda-0.1+ngame60+bf16": {60: []}, "allneg+lambda-0.1+bf16": {30: []},
            "x+ngame300+bf16": {30: []}, "plain+ngame10+bf16": {10: []}}
    assert sorted(regime.ngame_versus_random(arms)) == [("plain+ngame10+bf16", "plain+bf16", 10),
                                                        ("plain+ngame30+bf16", "plain+bf16", 30),
                                                        ("plain+ngame60+bf16", "plain+bf16", 60)]


def test_an_ngame10_arm_with_curves_is_a_length_arm_not_a_budget_row(regime, tmp_path):
    """plain+ngame10+bf16+e10 (Wikispeedia at the CLI's default length) is compared with plain+bf16 at
    10 epochs in the length tables; the budget table keeps to the 10-epoch float32 arms without curves."""
    runs = tmp_path / "runs"
    made = [fake_run("w", arm, s, p1, p1 / 2, epochs=10)
            for s in range(3) for arm, p1 in (("plain+bf16+e10", 0.40), ("plain+ngame10+bf16+e10", 0.42))]
    write_runs(runs, made)
    regime.write(runs, tmp_path / "regime.md")
    text = (tmp_path / "regime.md").read_text()
    rows = table_rows(text)
    assert rows[("plain+ngame10+bf16", "plain+bf16", "10")][4].startswith("+2.00")
    assert "NGAME cluster batches at the study's budget" not in text


def test_graph_arms_with_ngame_batches_are_compared_with_plain_on_the_same_batches(regime, tmp_path):
    """RAMEN-NGAME's own question: does the graph add to NGAME batches? Each graph arm with +ngame<N>
    is paired with plain+ngame<N> (same levers after it) at the same length; plain itself is not."""
    arms = {"plain+ngame30+bf16": {30: []}, "allneg+lambda-0.1+ngame30+bf16": {30: [], 60: []},
            "ramen+ngame60+bf16": {60: []}, "ramen+bf16": {30: []}, "allneg+ngame30+bf16": {30: []}}
    assert sorted(regime.graph_over_ngame(arms)) == [("allneg+lambda-0.1+ngame30+bf16", "plain+ngame30+bf16", 30),
                                                     ("allneg+ngame30+bf16", "plain+ngame30+bf16", 30)]
    runs = tmp_path / "runs"
    made = [fake_run("w", arm, s, p1, p1 / 2, epochs=30)
            for s in range(3) for arm, p1 in (("plain+bf16+e30", 0.40), ("plain+ngame30+bf16+e30", 0.44),
                                              ("allneg+lambda-0.1+ngame30+bf16+e30", 0.43 + s / 1000))]
    write_runs(runs, made)
    regime.write(runs, tmp_path / "regime.md")
    text = (tmp_path / "regime.md").read_text()
    section = text[text.index("the paper's RAMEN-NGAME"):]
    row = table_rows(section)[("allneg+lambda-0.1+ngame30+bf16", "plain+ngame30+bf16", "30")]
    assert row[4].startswith("-0.90") and row[-1] == "no"


def test_graph_arms_with_ngame_batches_at_the_budget_are_compared_with_plain_on_the_same_batches(regime, tmp_path):
    """The synthetic benchmark's graph arms with NGAME batches (10 epochs, no +e<N>) were compared only
    with random batches and with plain: the graph's own share, against plain+ngame10 paired by seed on
    held-out queries with the bar, was missing."""
    runs = tmp_path / "runs"
    made = []
    for s in range(3):
        for arm, p1 in (("plain", 0.30), ("allneg+lambda-0.1", 0.29), ("plain+ngame10", 0.33),
                        ("allneg+lambda-0.1+ngame10", 0.345 + s / 1000)):
            r = fake_run("s", arm, s, p1, p1 / 2, test_p1=p1, test_psp1=p1 / 2, epochs=10)
            if "ngame" not in arm:
                del r["curves"]  # the study's random-batch arms record no per-epoch curves
            made.append(r)
    write_runs(runs, made)
    regime.write(runs, tmp_path / "regime.md")
    text = (tmp_path / "regime.md").read_text()
    row = table_rows(text[text.index("RAMEN-NGAME against NGAME batches alone"):])[
        ("allneg+lambda-0.1+ngame10", "plain+ngame10", "10")]
    held = [100 * (0.015 + s / 1000) for s in range(3)]
    assert row[3] == "3" and row[4] == f"+{np.mean(held):.2f} ± {np.std(held, ddof=1):.2f}"
    assert row[5] == "+0.80 ± 0.05" and row[-1] == "no"  # P@1 clears the bar, PSP@1 (half of it) does not
