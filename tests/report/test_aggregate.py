"""The report's numbers: counts, shares, least-certain rows, flagged rows, groups and periods."""

import datetime
import random
from collections import Counter

import pytest

from structsent.errors import BadInputError
from structsent.report import build_report
from structsent.report.aggregate import (
    LabelledRow,
    Period,
    ReportAggregator,
    ReportOptions,
    Tally,
    choose_period,
    error_kind,
    negative_label,
    parse_day,
)

from .conftest import LABELS


def aggregate(rows, **options):
    aggregator = ReportAggregator(ReportOptions(labels=LABELS, **options))
    for row in rows:
        aggregator.add(row)
    return aggregator.result()


# -- on real files, every format ---------------------------------------------------------------------
def test_counts_shares_and_flags_match_the_file(labelled_file, labelled_sample):
    report, text_column = build_report(str(labelled_file))
    expected = Counter(labelled_sample.results[i].label for i in labelled_sample.labelled)
    assert text_column == "text"
    assert (report.overall.rows, report.overall.flagged) == (40, 5)
    assert report.overall.labels == dict(expected)
    assert report.overall.share("负面") == pytest.approx(expected["负面"] / 35)
    assert report.negative == "负面"
    assert dict(report.error_kinds) == {"empty text": 3, "line N: invalid JSON (Expecting value)": 2}
    assert [r.number for r in report.flagged_sample] == [i + 1 for i in labelled_sample.flagged]
    for label in LABELS:
        assert sum(report.histograms[label]) == expected[label]


def test_least_certain_rows_are_the_lowest_scores(labelled_file, labelled_sample):
    report, _ = build_report(str(labelled_file), least_certain=9)
    ranked = sorted(labelled_sample.labelled, key=lambda i: (labelled_sample.written_score(i), i))
    assert [r.number for r in report.least_certain] == [i + 1 for i in ranked[:9]]
    assert max(r.score for r in report.least_certain) <= min(labelled_sample.written_score(i) for i in ranked[9:])
    assert report.least_certain[0].text == labelled_sample.rows[ranked[0]].text


def test_group_shares_by_value(labelled_file, labelled_sample):
    report, _ = build_report(str(labelled_file), by="category", max_groups=3)
    groups = {g.name: g for g in report.breakdown.groups}
    assert report.breakdown.period is None  # categories are not dates
    assert sum(g.tally.rows for g in groups.values()) == 40
    rows_of = Counter(r.values["category"] for r in labelled_sample.rows)
    assert [g.name for g in report.breakdown.groups] == ["<b>手机</b>", "外卖", "酒店", "(other)"]
    assert groups["(other)"].tally.rows == rows_of[""] == 1 and report.breakdown.other_values == 1
    for name in ("外卖", "酒店", "<b>手机</b>"):
        picked = [i for i, r in enumerate(labelled_sample.rows) if r.values["category"] == name]
        labelled = [i for i in picked if labelled_sample.results[i].ok]
        negative = sum(labelled_sample.results[i].label == "负面" for i in labelled)
        assert groups[name].tally.rows == len(picked)
        assert groups[name].tally.share("负面") == pytest.approx(negative / len(labelled))


@pytest.mark.parametrize("period", ["auto", "day", "week", "month"])
def test_dates_are_binned_by_period(labelled_file, labelled_sample, period):
    report, _ = build_report(str(labelled_file), by="date", by_period=period)
    breakdown = report.breakdown
    assert breakdown.period is (Period.DAY if period == "auto" else Period(period))  # the dates span under 92 days
    expected = Counter()
    for row in labelled_sample.rows:
        if row.values["date"] == "unknown":
            continue
        day = datetime.date.fromisoformat(row.values["date"][:10])
        key = {"week": (day - datetime.timedelta(days=day.weekday())).isoformat(),
               "month": day.isoformat()[:7]}.get(period, day.isoformat())
        expected[key] += 1
    periods = {g.name: g.tally.rows for g in breakdown.groups if g.kind == "period"}
    assert {k: v for k, v in periods.items() if v} == dict(expected)
    assert list(periods) == sorted(periods)  # in time order, empty periods kept as gaps
    if period in ("auto", "day"):
        first, last = (datetime.date.fromisoformat(day) for day in (min(expected), max(expected)))
        assert len(periods) == (last - first).days + 1
    assert [(g.name, g.tally.rows) for g in breakdown.groups if g.kind == "undated"] == [("no date", 1)]


# -- pure aggregation --------------------------------------------------------------------------------
def test_least_certain_keeps_bounded_state_and_breaks_ties_by_row():
    rng = random.Random(7)
    rows = [LabelledRow(n, rng.choice(LABELS), round(rng.uniform(0.5, 1.0), 2), None, "x" * 5000) for n in range(1, 5001)]
    aggregator = ReportAggregator(ReportOptions(labels=LABELS, least_certain=50, text_chars=100))
    for row in rows:
        aggregator.add(row)
        assert len(aggregator._least) <= 50
    least = aggregator.result().least_certain
    assert [r.number for r in least] == [r.number for r in sorted(rows, key=lambda r: (r.score, r.number))[:50]]
    assert all(len(r.text) == 101 and r.text.endswith("…") for r in least)


def test_groups_past_the_limits_are_other():
    rows = [LabelledRow(n, LABELS[n % 2], 0.9, None, "", f"shop{n % 7}") for n in range(1, 701)]
    report = aggregate(rows, by="shop", max_groups=2, tracked_groups=4)
    groups = report.breakdown.groups
    assert [g.kind for g in groups] == ["value", "value", "other"]
    assert sum(g.tally.rows for g in groups) == 700
    assert groups[-1].tally.rows == 500 and report.breakdown.untracked_rows == 300
    assert groups[0].tally.share(LABELS[0]) == pytest.approx(0.5)


def test_group_values_that_are_not_strings_are_named_as_json():
    import decimal

    values = [{"城市": "北京"}, ["a", 1], True, None, 3.5, "北京", decimal.Decimal("1.50"), "上海".encode()]
    rows = [LabelledRow(n, "正面", 0.9, None, "", values[n % len(values)]) for n in range(80)]
    names = {g.name for g in aggregate(rows, by="v").breakdown.groups}
    assert names == {'{"城市": "北京"}', '["a", 1]', "true", "(empty)", "3.5", "北京", "1.50", "上海"}
    assert aggregate([LabelledRow(1, "正面", 0.9, None, "", datetime.date(2024, 1, 2))],
                     by="d").breakdown.groups[0].name == "2024-01-02"  # a Parquet date: no JSON quotes


def test_a_number_and_a_text_of_the_same_name_are_two_groups_the_text_quoted():
    """JSON Lines may hold 1 and "1" in one column: they were one group "1" of both rows' counts."""
    values = [1, "1", "1", True, "true", "x"]
    rows = [LabelledRow(n, LABELS[n % 2], 0.9, None, "", values[n % len(values)]) for n in range(60)]
    groups = {g.name: g.tally.rows for g in aggregate(rows, by="v").breakdown.groups}
    assert groups == {"1": 10, '"1"': 20, "true": 10, '"true"': 10, "x": 10}


def test_mostly_not_dates_is_grouped_by_value():
    rows = [LabelledRow(n, "正面", 0.9, None, "", "2024-01-01" if n < 90 else "soon") for n in range(1, 101)]
    assert aggregate(rows, by="d").breakdown.period is None
    rows = [LabelledRow(n, "正面", 0.9, None, "", "2024-01-01" if n < 97 else "soon") for n in range(1, 101)]
    assert aggregate(rows, by="d").breakdown.period is Period.DAY


def days_of(*ordinals, rows=1):
    """Day ordinal -> a Tally of ``rows`` labelled rows, as the aggregator keeps them."""
    days = {}
    for day in ordinals:
        days[day] = Tally()
        for n in range(rows):
            days[day].add(LabelledRow(n + 1, "正面", 0.9, None, ""))
    return days


def test_period_choice_and_names():
    start = datetime.date(2024, 1, 1).toordinal()
    assert choose_period(days_of(start, start + 92), Period.AUTO) is Period.WEEK
    assert choose_period(days_of(start, start + 91), Period.AUTO) is Period.DAY
    assert choose_period(days_of(start, start + 731), Period.AUTO) is Period.MONTH
    assert choose_period(days_of(start), Period.MONTH) is Period.MONTH
    rows = [LabelledRow(1, "负面", 0.8, None, "", "2023-12-31"), LabelledRow(2, "正面", 0.8, None, "", "2024-03-01")]
    months = aggregate(rows, by="d", by_period=Period.MONTH).breakdown.groups
    assert [(g.name, g.tally.rows) for g in months] == [("2023-12", 1), ("2024-01", 0), ("2024-02", 0), ("2024-03", 1)]
    weeks = aggregate(rows, by="d", by_period=Period.WEEK).breakdown.groups
    assert weeks[0].name == "2023-12-25" and weeks[-1].name == "2024-02-26" and len(weeks) == 10


SENTINELS = ("0001-01-01", "1970-01-01", "9999-12-31")


def dated_rows(dates):
    return [LabelledRow(n, LABELS[n % 2], 0.9, None, "", date) for n, date in enumerate(dates, 1)]


@pytest.mark.parametrize("period", ["auto", "week", "month"])
def test_sentinel_dates_list_only_periods_with_rows(period):
    # 1,012 rows on one day, one row on the first and one on the last day a date can name
    rows = dated_rows(["0001-01-01", *["2024-05-05"] * 1012, "9999-12-31"])
    breakdown = aggregate(rows, by="d", by_period=Period(period)).breakdown
    assert breakdown.period is (Period.DAY if period == "auto" else Period(period))  # the bulk is one day
    listed = [(g.kind, g.tally.rows) for g in breakdown.groups]
    assert listed == [("period", 1), ("gap", 0), ("period", 1012), ("gap", 0), ("period", 1)]
    names = [g.name for g in breakdown.groups if g.kind == "period"]
    assert names == {"auto": ["0001-01-01", "2024-05-05", "9999-12-31"],
                     "week": ["0001-01-01", "2024-04-29", "9999-12-27"],
                     "month": ["0001-01", "2024-05", "9999-12"]}[period]


def test_one_sentinel_does_not_choose_the_period_and_gaps_inside_the_bulk_stay():
    start = datetime.date(2024, 1, 1)
    bulk = [(start + datetime.timedelta(days=n % 91)).isoformat() for n in range(600) if n % 91 != 40]
    breakdown = aggregate(dated_rows([SENTINELS[0], *bulk]), by="d").breakdown
    assert breakdown.period is Period.DAY  # from the days most rows have, not from 0001-01-01
    groups = breakdown.groups
    assert [(g.name, g.kind) for g in groups[:3]] == [("0001-01-01", "period"), (groups[1].name, "gap"),
                                                      ("2024-01-01", "period")]
    inside = groups[2:]
    assert [g.name for g in inside] == [(start + datetime.timedelta(days=n)).isoformat() for n in range(91)]
    assert inside[40].tally.rows == 0 and all(g.kind == "period" for g in inside)  # a gap in the bulk is shown empty


@pytest.mark.parametrize("period", ["day", "month"])
def test_periods_listed_are_bounded_whatever_the_span(period):
    rng = random.Random(3)
    first, last = datetime.date(1, 1, 1).toordinal(), datetime.date(9999, 12, 31).toordinal()
    dates = [datetime.date.fromordinal(rng.randint(first, last)).isoformat() for _ in range(3000)]
    dates += [SENTINELS[1]] * 7 + ["2024-05-05"] * 5  # the two largest periods
    breakdown = aggregate(dated_rows(dates), by="d", by_period=Period(period), max_periods=50).breakdown
    periods = [g for g in breakdown.groups if g.kind == "period"]
    other = [g for g in breakdown.groups if g.kind == "other"]
    assert len(periods) == 50 and [g.name for g in periods] == sorted(g.name for g in periods)
    largest = {"day": {"1970-01-01", "2024-05-05"}, "month": {"1970-01", "2024-05"}}[period]
    assert largest <= {g.name for g in periods}
    assert len(other) == 1 and other[0].name == "other dates"
    assert sum(g.tally.rows for g in breakdown.groups) == len(dates)
    assert len(breakdown.groups) <= 2 * 50 + 1  # periods, a gap between each two, other dates


def test_parse_day():
    assert parse_day("2024-03-05") == datetime.date(2024, 3, 5)
    assert parse_day("2024-03-05T23:59:59+08:00") == datetime.date(2024, 3, 5)
    assert parse_day("2024-03-05 10:00") == datetime.date(2024, 3, 5)
    assert parse_day(datetime.datetime(2024, 3, 5, 1)) == datetime.date(2024, 3, 5)
    assert parse_day("2024-03-05Z") == datetime.date(2024, 3, 5)  # was refused
    for value in ("2024-03-05+08:00", "2024-03-05T10:00:00.123456Z", "2024-03-05 10:00:60", " 2024-03-05T23:59-0500 ",
                  "2024-03-05 10:00 +08", "2024-03-05 10:00:00 UTC", "2024-03-05 10:00:00.123456789 +0800 CST",
                  "2024-03-05T10:00:00+08:00[Asia/Shanghai]", "2024-03-05T10", "2024-03-05T1000"):
        assert parse_day(value) == datetime.date(2024, 3, 5), value
    for value in ("2024-01-01 7 apples", "2024-01-01T9xyz", "2024-01-01T24:00", "2024-01-01 10:61",
                  "2024-01-01 10 apples", "2024-01-01 10:00 extra"):  # a date and text after it: values, not days
        assert parse_day(value) is None, value
    for value in ("2024-02-30", "2024-3-5", "20240305", "2024-03-05x", None, 20240305, "下周",
                  "２０２４-03-05", "2024-03-05 is the day"):  # were dates: digits of other scripts, any text after
        assert parse_day(value) is None, value


def test_negative_label_and_error_kinds():
    assert negative_label(("正面", "负面")) == "负面"
    assert negative_label(("positive", "Negative")) == "Negative"
    assert negative_label(("a", "b")) == "a"
    with pytest.raises(BadInputError, match="not a label"):
        negative_label(LABELS, "中性")
    assert error_kind("line 12: expected 3 fields, got 5") == "line N: expected N fields, got N"
    assert error_kind("rows 1,001-2,000: invalid UTF-8 at byte 0.5") == "rows N-N: invalid UTF-8 at byte N"
    assert (error_kind("line 3: field 'text' holds a lone UTF-16 surrogate escape; the number 1e400 cannot be held")
            == "line N: field 'text' holds a lone UTF-16 surrogate escape; the number 1e400 cannot be held")
    assert (error_kind("line 12: no '评论1' field; id_42 at 1.5e10 ms, é3 got 5.")
            == "line N: no '评论1' field; id_42 at 1.5e10 ms, é3 got N.")


def test_a_flagged_row_counts_but_has_no_score():
    report = aggregate([LabelledRow(1, None, None, "empty text", ""), LabelledRow(2, "正面", 0.7, None, "好")])
    assert report.overall.labelled == 1 and report.overall.mean_score == pytest.approx(0.7)
    assert [r.number for r in report.least_certain] == [2]


def test_a_stretch_whose_periods_went_to_other_dates_is_not_drawn_as_empty():
    """With more periods than listed, the stretch between two listed periods holding one that went to
    "other dates" was a gap: "No rows from 2020-01-12 to 2020-01-12", a day with rows."""
    start = datetime.date(2020, 1, 1)
    dates = []
    for n in range(30):  # every 5th day one row, the others two: the one-row days are not listed
        dates += [(start + datetime.timedelta(days=n)).isoformat()] * (1 if n % 5 == 4 else 2)
    groups = aggregate(dated_rows(dates), by="d", by_period=Period.DAY, max_periods=24).breakdown.groups
    kinds = [(g.kind, g.name) for g in groups]
    assert ("folded", "2020-01-05 to 2020-01-05") in kinds and not any(kind == "gap" for kind, _ in kinds)
    assert groups[-1].kind == "other" and groups[-1].tally.rows == 6
    assert sum(g.tally.rows for g in groups) == len(dates)


def test_dates_past_the_days_tracked_count_in_other_dates_not_as_no_date():
    """Past tracked_days distinct days the rows became "no date", and past 5% of the rows the whole
    breakdown fell back to values (the 20 first days, a month asked for or not)."""
    start = datetime.date(1900, 1, 1)
    dates = [(start + datetime.timedelta(days=n)).isoformat() for n in range(300)]
    breakdown = aggregate(dated_rows(dates), by="d", by_period=Period.MONTH, tracked_days=200).breakdown
    assert breakdown.period is Period.MONTH
    kinds = Counter(g.kind for g in breakdown.groups)
    assert kinds["undated"] == 0 and kinds["other"] == 1
    other = next(g for g in breakdown.groups if g.kind == "other")
    assert other.name == "other dates" and other.tally.rows == 100
    assert sum(g.tally.rows for g in breakdown.groups) == 300


@pytest.mark.parametrize(("score", "first_bin"), [(0.5, 0.5), (0.55, 0.55), (0.575, 0.575), (0.6, 0.6), (0.7, 0.7),
                                                  (0.825, 0.825), (0.999999, 0.975), (1.0, 0.975)])
def test_a_score_on_a_bin_edge_lands_in_the_bin_it_starts(score, first_bin):
    """0.6 was counted in 0.575-0.600 and 0.7 in 0.675-0.700 (float error), 0.55 in 0.550-0.575."""
    report = aggregate([LabelledRow(1, LABELS[0], score, None, "")])
    counts = report.histograms[LABELS[0]]
    assert counts.index(1) == round((first_bin - 0.5) / 0.025)


def test_the_reason_of_a_flagged_row_is_cut_as_its_text_is():
    """A 1 MB reason was kept whole for every sampled flagged row: a 30 MB page for 30 rows."""
    report = aggregate([LabelledRow(1, None, None, "bad " * 250_000, "x" * 5000)], text_chars=2000)
    (row,) = report.flagged_sample
    assert len(row.error) == 2001 and row.error.endswith("…") and len(row.text) == 2001


LONG = "长" * 200
EXACT_VALUES = ["a", " a", "a  ", "   ", "", "other", "(empty)", "(other)", '"a"', "a\tb", "a b", "a  b",
                LONG + "x", LONG + "y", LONG]


def exact_values_file(tmp_path, fmt):
    """One labelled row per value of EXACT_VALUES (plus a second empty one), as the label job writes them."""
    import numpy as np

    from structsent.io.readers import InputRow
    from structsent.results import to_result

    from .conftest import Sample, write_labelled

    values = [*EXACT_VALUES, ""]
    rows = [InputRow(i + 1, {"text": f"评论{i}", "shop": value}, f"评论{i}") for i, value in enumerate(values)]
    results = [to_result(np.array([0.2, 0.8]), LABELS) for _ in values]
    path = tmp_path / f"labelled.{fmt}"
    write_labelled(path, fmt, Sample(rows, results))
    return path


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_groups_are_the_exact_values_whitespace_and_length_included(tmp_path, fmt):
    """" a", "a  " and "a" were one group, "   " joined the empty group, and two values of 201
    characters that differ in their last one were one group: names were cut to 200 and stripped."""
    report, _ = build_report(str(exact_values_file(tmp_path, fmt)), by="shop", max_groups=100)
    groups = report.breakdown.groups
    assert [g.kind for g in groups].count("value") == len(EXACT_VALUES) - 1 and report.breakdown.other_values == 0
    empty = [g for g in groups if g.kind == "empty"]
    assert len(empty) == 1 and empty[0].tally.rows == 2  # "" twice; "   " is a value of its own
    assert all(g.tally.rows == 1 for g in groups if g.kind == "value")
    assert len({g.name for g in groups}) == len(groups)  # no two groups shown alike
    assert all(len(g.name) < 300 for g in groups)  # a long value is shortened where shown, only there


def test_a_value_named_like_a_row_the_report_adds_is_told_apart_from_it():
    """A value "other" or "(empty)" was shown as the built-in "other" and "(empty)" rows were, but for italics."""
    values = ["other", "(empty)", "(other)", "", "x1", "x2", "x3"]
    rows = [LabelledRow(n, "正面", 0.9, None, "", values[n % len(values)]) for n in range(70)]
    groups = aggregate(rows, by="v", max_groups=4).breakdown.groups
    built_in = {g.name for g in groups if g.kind in ("empty", "other")}
    assert len(built_in) == 2 and not built_in & {g.name for g in groups if g.kind == "value"}
    assert {"other", '"(empty)"', '"(other)"'} <= {g.name for g in groups if g.kind == "value"}


def test_long_values_keep_bounded_memory_and_stay_apart():
    """Group keys hold at most 200 characters of a value, whatever its length; the rest is a SHA-256."""
    values = [("长" * 100_000) + str(n % 3) for n in range(30)]
    aggregator = ReportAggregator(ReportOptions(labels=LABELS, by="v"))
    for n, value in enumerate(values, 1):
        aggregator.add(LabelledRow(n, "正面", 0.9, None, "", value))
    assert len(aggregator._groups) == 3
    assert all(sum(len(part) for part in key if isinstance(part, str)) < 300 for key in aggregator._groups)
    groups = aggregator.result().breakdown.groups
    assert [g.tally.rows for g in groups] == [10, 10, 10] and len({g.name for g in groups}) == 3


def test_a_few_dates_years_apart_do_not_list_every_empty_month_between_them():
    """Ten rows on three dates in 1938, 1970 and 2001 listed 763 months, 760 of them empty."""
    rows = dated_rows(["1938-05-01"] * 3 + ["1970-01-01"] * 4 + ["2001-12-31"] * 3)
    groups = aggregate(rows, by="d", by_period=Period.MONTH).breakdown.groups
    assert [(g.kind, g.name, g.tally.rows) for g in groups] == [
        ("period", "1938-05", 3), ("gap", "1938-06 to 1969-12", 0), ("period", "1970-01", 4),
        ("gap", "1970-02 to 2001-11", 0), ("period", "2001-12", 3)]
    # a core span of a few more periods than have rows, or a short one, still lists its empty periods
    start = datetime.date(2024, 1, 1)
    sparse = [(start + datetime.timedelta(days=n)).isoformat() for n in range(0, 90, 3)]  # 30 days of 88
    days = aggregate(dated_rows(sparse), by="d", by_period=Period.DAY).breakdown.groups
    assert len(days) == 88 and all(g.kind == "period" for g in days) and sum(g.tally.rows for g in days) == 30


# -- more distinct values than are tracked: the largest found, then counted exactly ------------------
def test_the_largest_value_first_seen_past_those_tracked_is_listed_with_its_exact_count(tmp_path):
    """A file sorted by time (users, then a popular shop): the value holding most rows came after the
    first 10,000 distinct ones, and was left out of "the largest groups", folded into (other)."""
    import csv

    path = tmp_path / "late.csv"
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text", "shop", "label", "score", "prob_负面", "prob_正面", "error"])
        shops = [f"u{i}" for i in range(10_000)] + ["BIG"] * 3_000 + ["u7"] * 40 + ["BIG"] * 1_000
        for n, shop in enumerate(shops):
            negative = n % 4 == 0
            writer.writerow([n, "好", shop, "负面" if negative else "正面", 0.9, 0.9 if negative else 0.1,
                             0.1 if negative else 0.9, ""])
    report, _ = build_report(str(path), by="shop", max_groups=3)
    breakdown = report.breakdown
    groups = {g.name: g for g in breakdown.groups}
    names = [g.name for g in breakdown.groups]
    assert breakdown.recounted and names[:2] == ["BIG", "u7"] and names[3] == "(other)"  # (then a 1-row tie)
    big = [n for n, shop in enumerate(shops) if shop == "BIG"]
    assert groups["BIG"].tally.rows == 4_000 and groups["BIG"].tally.labels == {
        "负面": sum(n % 4 == 0 for n in big), "正面": sum(n % 4 != 0 for n in big)}
    assert groups["u7"].tally.rows == 41 and groups[names[2]].tally.rows == 1
    assert sum(g.tally.rows for g in breakdown.groups) == len(shops) == report.overall.rows
    assert breakdown.untracked_rows == 0 and breakdown.unlisted_at_most <= 1


def test_a_file_that_changes_between_the_two_reads_is_refused():
    rows = [LabelledRow(n, LABELS[0], 0.9, None, "", f"v{n % 50}") for n in range(1, 201)]
    aggregator = ReportAggregator(ReportOptions(labels=LABELS, by="v", tracked_groups=10))
    for row in rows:
        aggregator.add(row)
    assert aggregator.needs_recount()
    with pytest.raises(BadInputError, match="changed while the report read it"):
        aggregator.recount(rows[:-1])


def test_dates_are_never_read_twice():
    rows = [LabelledRow(n, LABELS[0], 0.9, None, "", f"2024-{1 + n % 12:02d}-{1 + n % 28:02d}") for n in range(1, 400)]
    aggregator = ReportAggregator(ReportOptions(labels=LABELS, by="d", tracked_groups=10))
    for row in rows:
        aggregator.add(row)
    assert not aggregator.needs_recount() and aggregator.result().breakdown.period is not None


@pytest.mark.parametrize("seed", range(6))
def test_heavy_hitters_monitor_every_value_more_frequent_than_their_bound(seed):
    from structsent.report.aggregate import HeavyHitters

    rng = random.Random(seed)
    capacity = rng.choice([5, 20, 50])
    stream = [int(rng.paretovariate(1.1)) for _ in range(rng.choice([300, 3_000]))]
    if seed % 2:  # the frequent ones late
        stream.sort(key=lambda v: -v)
    counts = Counter(stream[:capacity])
    sketch = HeavyHitters(capacity, {})
    for value in stream:
        sketch.add(value)
    truth = Counter(stream)
    bound = sketch.most_unmonitored()
    assert len(sketch.keys()) <= capacity
    assert {v for v, c in truth.items() if c > bound} <= set(sketch.keys())
    assert all(sketch._estimate[v] >= truth[v] for v in sketch.keys())
    assert counts  # (the stream is not empty)


def test_a_file_put_in_place_of_the_one_read_first_is_refused(tmp_path, monkeypatch):
    """The second read checked the row count alone: another file of as many rows renamed into place
    between the reads (a `label --overwrite` finishing) gave totals of one file, groups of the other."""
    import csv
    import os

    def write(path, label):
        with open(path, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "text", "shop", "label", "score", "prob_负面", "prob_正面", "error"])
            for n in range(10_050):
                p = 0.9 if label == "负面" else 0.1
                writer.writerow([n, "好", f"u{n}", label, 0.9, p, round(1 - p, 1), ""])

    path, other = tmp_path / "out.csv", tmp_path / "other.csv"
    write(path, "负面")
    write(other, "正面")
    real_recount = ReportAggregator.recount

    def replaced_first(self, rows):
        os.replace(other, path)
        real_recount(self, rows)

    monkeypatch.setattr(ReportAggregator, "recount", replaced_first)
    with pytest.raises(BadInputError, match="changed while the report read it"):
        build_report(str(path), by="shop")
