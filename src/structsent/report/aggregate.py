"""Labelled rows in, the numbers of the report out: one pass, bounded state, no I/O.

Whatever the size of the file, the aggregator keeps counts, fixed-size histograms, a heap of
the least certain rows, the first flagged rows, and at most ``tracked_groups`` groups and
``tracked_days`` days; texts it keeps are cut to ``text_chars`` characters. The page lists at
most ``max_groups`` groups or ``max_periods`` periods, whatever the span of the dates.

>>> agg = ReportAggregator(ReportOptions(labels=("负面", "正面")))
>>> for n, (label, score) in enumerate([("正面", 0.99), ("负面", 0.61), (None, None)], 1):
...     agg.add(LabelledRow(n, label, score, None if label else "empty text", "..."))
>>> report = agg.result()
>>> report.overall.rows, report.overall.flagged, report.overall.share("负面")
(3, 1, 0.5)
>>> [row.number for row in report.least_certain]
[2, 1]
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime
import enum
import heapq
import itertools
import re
from collections import Counter
from collections.abc import Iterable

from ..errors import BadInputError
from .groups import OTHER_ROW, UNREADABLE_ROW, GroupValue, group_value, names_of_values, shown_name

LATE_DAY = 0  # no date's ordinal: a date first seen after the days tracked, counted in "other dates"
NEGATIVE_NAMES = ("负面", "消极", "negative", "neg")


class Period(str, enum.Enum):
    AUTO = "auto"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


@dataclasses.dataclass(frozen=True, slots=True)
class LabelledRow:
    """One row of a labelled file. ``label`` and ``score`` are None exactly when ``error`` says why."""

    number: int  # 1-based record number in the file
    label: str | None
    score: float | None
    error: str | None
    text: str
    group: object = None  # the --by column's value; in a Report, the name the page shows for it


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReportOptions:
    labels: tuple[str, ...]  # the model's labels (the file's prob_ columns), in order
    negative: str | None = None  # the label whose share the group charts show; None: guessed
    by: str | None = None  # the column rows are grouped by
    by_period: Period = Period.AUTO
    least_certain: int = 200
    flagged_sample: int = 200
    max_groups: int = 20
    histogram_bins: int = 20
    text_chars: int = 2_000
    tracked_groups: int = 10_000
    tracked_days: int = 40_000
    max_periods: int = 1_000  # periods listed; past it, the rest are "other dates"
    error_kinds: int = 100


def negative_label(labels: tuple[str, ...], requested: str | None = None) -> str:
    """The requested label, else one named like a negative, else the first (class 0 by convention)."""
    if requested is not None:
        if requested not in labels:
            raise BadInputError(f"--negative {requested!r} is not a label of this file ({', '.join(labels)})")
        return requested
    return next((label for label in labels if label.lower() in NEGATIVE_NAMES), labels[0])


class Tally:
    """Counts of one set of rows: all of them, one group, one period."""

    __slots__ = ("rows", "flagged", "labels", "score_sum")

    def __init__(self) -> None:
        self.rows = 0
        self.flagged = 0
        self.labels: dict[str, int] = {}
        self.score_sum = 0.0

    def add(self, row: LabelledRow) -> None:
        self.rows += 1
        if row.label is None or row.score is None:  # both None together: a flagged row
            self.flagged += 1
        else:
            self.labels[row.label] = self.labels.get(row.label, 0) + 1
            self.score_sum += row.score

    def merge(self, other: "Tally") -> None:
        self.rows += other.rows
        self.flagged += other.flagged
        self.score_sum += other.score_sum
        for label, count in other.labels.items():
            self.labels[label] = self.labels.get(label, 0) + count

    @property
    def labelled(self) -> int:
        return self.rows - self.flagged

    def share(self, label: str) -> float | None:
        """Share of the labelled rows that got ``label`` (None when none are labelled)."""
        return self.labels.get(label, 0) / self.labelled if self.labelled else None

    @property
    def mean_score(self) -> float | None:
        return self.score_sum / self.labelled if self.labelled else None


@dataclasses.dataclass(frozen=True)
class GroupRow:
    name: str  # as the page shows it: a value's name (groups.shown_name), a period, "(other)", "no date"...
    tally: Tally
    kind: str = "value"  # value | empty | unreadable | other | period | gap | undated (gap: empty periods, one mark on the chart)


@dataclasses.dataclass(frozen=True)
class Breakdown:
    """Rows per group of the --by column: by value, or by period when its values are dates."""

    column: str
    period: Period | None  # None: grouped by value
    groups: list[GroupRow]
    other_values: int  # distinct values folded into "other" (those past tracked_groups not counted)
    untracked_rows: int  # rows whose value came after tracked_groups distinct ones (0 once recounted)
    # More than tracked_groups distinct values: the largest were found in one read (space-saving) and
    # counted exactly in a second; a value not listed has at most ``unlisted_at_most`` rows.
    recounted: bool = False
    unlisted_at_most: int = 0


@dataclasses.dataclass(frozen=True)
class Report:
    labels: tuple[str, ...]
    negative: str
    overall: Tally
    histogram_floor: float  # the histograms span [histogram_floor, 1]
    histograms: dict[str, list[int]]
    least_certain: list[LabelledRow]  # lowest scores first (ties: earlier rows first)
    error_kinds: list[tuple[str, int]]  # most frequent first; numbers in messages shown as N
    other_error_rows: int  # flagged rows whose kind came after error_kinds distinct ones
    flagged_sample: list[LabelledRow]  # the first flagged rows, in file order
    breakdown: Breakdown | None


def histogram_floor(label_count: int) -> float:
    """The lowest score a row can have: the top probability of k labels is at least 1/k."""
    return int(20 / max(label_count, 1)) / 20 if label_count > 1 else 0.0


def error_kind(message: str) -> str:
    """A message with its numbers as N, so "line 7: ..." and "line 9: ..." count as one kind."""
    return _DIGITS.sub("N", message)[:300]


# A number standing alone (12, 1,024, 0.5): not part of a word, a name or a longer number ("UTF-16",
# "评论1", "id_42", "1e400", "1.5e400", "0xab")
_DIGITS = re.compile(r"(?<![\w.,])(?<![^\W\d]-)[0-9]+(?:[.,][0-9]+)*(?![.,]?\w)")
_DAY_MEMO = 20_000  # distinct --by values whose day is remembered (dates repeat; timestamps need not)
# ASCII digits only (a full-width "２０２４" is no ISO date), and after the day a time or nothing.
# A whole date or date and time as programs write them: an ISO 8601 day, then an optional time of
# day (hours; minutes, seconds and a fraction optional; colons optional), then an optional Z or UTC
# offset, then an optional zone name ("UTC", "CST", "[Asia/Shanghai]"). Anything else after the day
# ("2024-01-01 7 apples") makes the value not a date.
_ISO_DAY = re.compile(r"\s*([0-9]{4})-([0-9]{2})-([0-9]{2})"
                      r"(?:[T ](?:[01][0-9]|2[0-3])(?::?[0-5][0-9](?::?(?:[0-5][0-9]|60)(?:[.,][0-9]+)?)?)?)?"
                      r"\s*(?:Z|[+-](?:[01][0-9]|2[0-3])(?::?[0-5][0-9])?)?"
                      r"\s*(?:[A-Z]{2,5}|\[[A-Za-z0-9_+\-/]+\])?\s*")


def parse_day(value: object) -> datetime.date | None:
    """The calendar day an ISO date or datetime names (as written: no time zone conversion)."""
    if isinstance(value, datetime.datetime):
        return value.date()
    if isinstance(value, datetime.date):
        return value
    if not isinstance(value, str):
        return None
    match = _ISO_DAY.fullmatch(value)
    if match is None:
        return None
    try:
        return datetime.date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None


class ReportAggregator:
    """Feed every row to ``add``, in file order; ``result`` gives the Report."""

    def __init__(self, options: ReportOptions) -> None:
        if not options.labels:
            raise BadInputError("no labels: the file has no prob_<label> column")
        self.options = options
        self.negative = negative_label(options.labels, options.negative)
        self.overall = Tally()
        self.floor = histogram_floor(len(options.labels))
        self.histograms = {label: [0] * options.histogram_bins for label in options.labels}
        self._least: list[tuple[float, int, LabelledRow]] = []  # a heap: the most certain kept row on top
        self._kinds: Counter = Counter()
        self._other_kind_rows = 0
        self._flagged: list[LabelledRow] = []
        self._groups: dict[GroupValue, Tally] = {}  # by exact value (bounded keys: see groups.py)
        self._untracked = Tally()
        self._largest: HeavyHitters | None = None  # past tracked_groups distinct values: the likely largest
        self._recounted = False
        self._days: dict[int, Tally] = {}
        self._late_days = Tally()  # rows dated on a day first seen after tracked_days distinct ones
        self._undated = Tally()
        self._unread = Tally()  # records that could not be read: their --by value is not known
        self._valued_rows = 0  # rows with a non-empty --by value
        self._dated_rows = 0
        self._day_of: dict[GroupValue, int | None] = {}

    def add(self, row: LabelledRow) -> None:
        self.overall.add(row)
        if row.label is None or row.score is None:  # both None together: a flagged row
            self._add_flagged(row)
        else:
            self._add_histogram(row.label, row.score)
            self._add_least_certain(row, row.score)
        if self.options.by is not None:
            self._add_group(row)

    # -- labelled rows ----------------------------------------------------------------------------
    def _add_histogram(self, label: str, score: float) -> None:
        bins = self.options.histogram_bins
        # Rounded first: 0.6 must land in the bin that starts at 0.6, not at 0.575 (float error).
        position = int(round((score - self.floor) / (1.0 - self.floor) * bins, 9))
        self.histograms[label][min(max(position, 0), bins - 1)] += 1

    def _add_least_certain(self, row: LabelledRow, score: float) -> None:
        limit = self.options.least_certain
        if limit <= 0:
            return
        key = (-score, -row.number)  # larger key = less certain (then earlier)
        if len(self._least) < limit:
            heapq.heappush(self._least, (*key, self._kept(row)))
        elif key > self._least[0][:2]:
            heapq.heapreplace(self._least, (*key, self._kept(row)))

    def _kept(self, row: LabelledRow) -> LabelledRow:
        """The row as the report keeps it: text and reason cut to text_chars, the group as its key
        (named in ``result``, once the names of all values are known)."""
        group = None if self.options.by is None else group_value(row.group)
        return dataclasses.replace(row, text=self._cut(row.text), error=None if row.error is None else self._cut(row.error),
                                   group=group)

    def _cut(self, text: str) -> str:
        limit = self.options.text_chars
        return text if len(text) <= limit else text[:limit] + "…"

    # -- flagged rows -----------------------------------------------------------------------------
    def _add_flagged(self, row: LabelledRow) -> None:
        kind = error_kind(row.error or "")
        if kind in self._kinds or len(self._kinds) < self.options.error_kinds:
            self._kinds[kind] += 1
        else:
            self._other_kind_rows += 1
        if len(self._flagged) < self.options.flagged_sample:
            self._flagged.append(self._kept(row))

    # -- groups -----------------------------------------------------------------------------------
    def _add_group(self, row: LabelledRow) -> None:
        key = group_value(row.group)
        tally = self._groups.get(key)
        if tally is None:
            if len(self._groups) < self.options.tracked_groups:
                tally = self._groups[key] = Tally()
            else:
                tally = self._untracked
                if self._largest is None:  # the first value past those tracked: their counts so far are exact
                    self._largest = HeavyHitters(self.options.tracked_groups,
                                                 {k: t.rows for k, t in self._groups.items()})
        if self._largest is not None:
            self._largest.add(key)
        tally.add(row)
        if key.unreadable:
            self._unread.add(row)
            return
        if key.empty:
            self._undated.add(row)
            return
        self._valued_rows += 1
        day = self._day(key, row.group)
        if day is None:
            self._undated.add(row)
            return
        self._dated_rows += 1
        if day == LATE_DAY:
            self._late_days.add(row)
        else:
            self._days[day].add(row)

    def _day(self, key: GroupValue, value: object) -> int | None:
        """The day's ordinal (None: not a date; LATE_DAY: a day first seen after tracked_days distinct
        ones); memoised per value."""
        if key in self._day_of:
            return self._day_of[key]
        parsed = parse_day(value)
        day = None if parsed is None else parsed.toordinal()
        if day is not None and day not in self._days:
            if len(self._days) < self.options.tracked_days:
                self._days[day] = Tally()
            else:
                day = LATE_DAY
        if len(self._day_of) < _DAY_MEMO:
            self._day_of[key] = day
        return day

    # -- a second read, for the largest of many values ----------------------------------------------
    def needs_recount(self) -> bool:
        """Whether the groups are values (not dates), more than tracked_groups distinct: those tracked
        are then the first seen, not the largest, and ``recount`` (a second read of the rows) counts
        the likely largest exactly."""
        return self._largest is not None and not self._recounted and not self._grouped_by_dates()

    def recount(self, rows: Iterable[LabelledRow]) -> None:
        """Exact tallies of the values the first read found likely largest, from ``rows`` read again
        (the same rows: a file that changed in between is refused); every other value's rows are
        (other)."""
        assert self._largest is not None
        groups: dict[GroupValue, Tally] = {key: Tally() for key in self._largest.keys()}
        other, read = Tally(), 0
        for row in rows:
            read += 1
            groups.get(group_value(row.group), other).add(row)
        if read != self.overall.rows:
            raise BadInputError(f"the file changed while the report read it ({self.overall.rows:,} rows, then "
                                f"{read:,}); make the report once nothing writes it")
        self._groups, self._untracked, self._recounted = groups, other, True

    def _grouped_by_dates(self) -> bool:
        # Dates when nearly every value is one: a stray "unknown" should not hide the time chart.
        return bool(self._dated_rows) and self._dated_rows >= 0.95 * self._valued_rows

    # -- the result -------------------------------------------------------------------------------
    def result(self) -> Report:
        least = sorted(self._least, key=lambda entry: (-entry[0], -entry[1]))
        taken = names_of_values(self._groups)
        return Report(
            labels=self.options.labels,
            negative=self.negative,
            overall=self.overall,
            histogram_floor=self.floor,
            histograms=self.histograms,
            least_certain=[self._named(row, taken) for _, _, row in least],
            error_kinds=sorted(self._kinds.items(), key=lambda item: (-item[1], item[0])),
            other_error_rows=self._other_kind_rows,
            flagged_sample=[self._named(row, taken) for row in self._flagged],
            breakdown=self._breakdown(self.options.by, taken) if self.options.by is not None else None,
        )

    @staticmethod
    def _named(row: LabelledRow, taken: set[str]) -> LabelledRow:
        """A kept row with its group's key replaced by the name the page shows."""
        if not isinstance(row.group, GroupValue):
            return row
        return dataclasses.replace(row, group=shown_name(row.group, taken))

    def _breakdown(self, by: str, taken: set[str]) -> Breakdown:
        if self._grouped_by_dates():
            period = choose_period(self._days, self.options.by_period)
            groups = by_period(self._days, period, self.options.max_periods, late=self._late_days)
            if self._undated.rows:
                groups.append(GroupRow("no date", self._undated, "undated"))
            if self._unread.rows:
                groups.append(GroupRow(UNREADABLE_ROW, self._unread, "unreadable"))
            return Breakdown(by, period, groups, 0, 0)
        return self._value_breakdown(by, taken)

    def _value_breakdown(self, by: str, taken: set[str]) -> Breakdown:
        """The largest groups by rows (ties: by value), then one "(other)" row for the rest."""
        ranked = sorted(self._groups.items(), key=lambda item: (-item[1].rows, item[0]))
        shown, rest = ranked[: self.options.max_groups], ranked[self.options.max_groups:]
        groups = [GroupRow(shown_name(key, taken), tally, _kind_of(key)) for key, tally in shown]
        other = Tally()
        for _, tally in rest:
            other.merge(tally)
        other.merge(self._untracked)
        if other.rows:
            groups.append(GroupRow(OTHER_ROW, other, "other"))
        if self._recounted:
            assert self._largest is not None
            return Breakdown(by, None, groups, len(rest), 0, recounted=True,
                             unlisted_at_most=self._largest.most_unmonitored())
        return Breakdown(by, None, groups, len(rest), self._untracked.rows)


class HeavyHitters:
    """The values that may be the most frequent in a stream, in bounded space (space-saving,
    Metwally, Agrawal and El Abbadi, 2005): ``capacity`` values are monitored, each with an estimate
    that is at least its count; a value not monitored occurs at most ``most_unmonitored()`` times,
    so every value more frequent than that is among ``keys()``. The value to drop for a newcomer
    (the smallest estimate) comes from a heap whose stale entries are refreshed as they surface."""

    def __init__(self, capacity: int, counts: dict) -> None:
        self.capacity = max(capacity, 1)
        self._estimate = dict(counts)  # exact so far: counted before anything was dropped
        self._order = itertools.count()
        self._heap = [(estimate, next(self._order), key) for key, estimate in self._estimate.items()]
        heapq.heapify(self._heap)

    def add(self, key) -> None:
        estimate = self._estimate.get(key)
        if estimate is not None:
            self._estimate[key] = estimate + 1
            return
        if len(self._estimate) < self.capacity:
            self._monitor(key, 1)
            return
        smallest, dropped = self._smallest()
        del self._estimate[dropped]
        heapq.heappop(self._heap)
        self._monitor(key, smallest + 1)  # it may have occurred as often as the value it replaces

    def keys(self) -> list:
        return list(self._estimate)

    def most_unmonitored(self) -> int:
        """The most any value not monitored can have occurred: the smallest estimate once the
        monitored values are as many as ``capacity`` (0 before: every value seen is monitored)."""
        return self._smallest()[0] if len(self._estimate) >= self.capacity else 0

    def _monitor(self, key, estimate: int) -> None:
        self._estimate[key] = estimate
        heapq.heappush(self._heap, (estimate, next(self._order), key))

    def _smallest(self) -> tuple[int, object]:
        """The smallest estimate and its value, at the top of the heap (stale entries refreshed)."""
        while True:
            estimate, _, key = self._heap[0]
            current = self._estimate[key]
            if current == estimate:
                return estimate, key
            heapq.heapreplace(self._heap, (current, next(self._order), key))


def _kind_of(key: GroupValue) -> str:
    return "empty" if key.empty else "unreadable" if key.unreadable else "value"


def core_days(days: dict[int, Tally]) -> tuple[int, int]:
    """The first and last day of the middle 98% of the dated rows (all of them under 100 rows).

    A few placeholder dates (0001-01-01, 1970-01-01, 9999-12-31) fall outside it, so they neither
    choose the period nor stretch the chart.
    """
    ordered = sorted(days)
    trim = int(sum(days[day].rows for day in ordered) * _CORE_TRIM)
    return _past(ordered, days, trim), _past(reversed(ordered), days, trim)


_CORE_TRIM = 0.01  # share of the dated rows left out at each end of the core days


def _past(ordered: Iterable[int], days: dict[int, Tally], trim: int) -> int:
    """The first day in ``ordered`` by which more than ``trim`` rows have gone by."""
    seen, day = 0, 0
    for day in ordered:
        seen += days[day].rows
        if seen > trim:
            break
    return day


def choose_period(days: dict[int, Tally], requested: Period) -> Period:
    """auto: days when the core days span up to about three months, weeks up to two years, months beyond."""
    if requested is not Period.AUTO:
        return requested
    first, last = core_days(days)
    span = last - first + 1
    return Period.DAY if span <= 92 else Period.WEEK if span <= 731 else Period.MONTH


def by_period(days: dict[int, Tally], period: Period, max_periods: int, *, late: Tally | None = None) -> list[GroupRow]:
    """The periods that have rows, in time order, and what lies between them.

    At most ``max_periods`` periods are listed, those with the most rows; the rest, and the rows of
    ``late`` (days past those tracked), are one "other dates" row. Between the first and last period
    of the core days, empty periods are listed too (gaps stay visible) when everything then fits in
    ``max_periods`` and they are not many more than the periods with rows (``_worth_filling``); any
    other stretch without rows is one "gap" row, and a stretch whose periods went to "other dates"
    one "folded" row. Work and output follow the distinct days, never their span.
    """
    bins: dict[int, Tally] = {}
    for day, tally in days.items():
        bins.setdefault(_period_key(day, period), Tally()).merge(tally)
    ranked = sorted(bins, key=lambda key: (-bins[key].rows, key))
    kept = sorted(ranked[:max_periods])
    first, last = (_period_key(day, period) for day in core_days(days))
    outside = sum(not first <= key <= last for key in kept)
    span = len(range(first, last + 1, _step(period)))
    fill = span + outside <= max_periods and _worth_filling(span, sum(first <= key <= last for key in kept))
    folded = sorted(ranked[max_periods:])
    groups: list[GroupRow] = []
    for previous, key in zip([None, *kept], kept):
        if previous is not None and key != previous + _step(period):
            between = range(previous + _step(period), key, _step(period))
            if bisect.bisect_left(folded, key) > bisect.bisect_right(folded, previous):
                groups.append(_stretch(between, period, "folded"))
            elif fill and first <= previous and key <= last:
                groups += _empty_periods(between, period)
            else:
                groups.append(_stretch(between, period, "gap"))
        groups.append(GroupRow(_period_name(key, period), bins[key], "period"))
    other = Tally()
    if late is not None:
        other.merge(late)
    for key in folded:
        other.merge(bins[key])
    if other.rows:
        groups.append(GroupRow("other dates", other, "other"))
    return groups


FILL_ALWAYS = 60  # periods of the core span listed one by one, empty ones included, whatever their rows
FILL_FACTOR = 4  # beyond that, as long as the span is at most this many times the periods with rows


def _worth_filling(span: int, with_rows: int) -> bool:
    """Whether the empty periods of a core span of ``span`` periods, ``with_rows`` of them holding
    rows, are listed one by one: a few dates years apart listed every empty month between them
    (763 rows for 3 dates)."""
    return span <= max(FILL_ALWAYS, FILL_FACTOR * with_rows)


def _empty_periods(keys: range, period: Period) -> list[GroupRow]:
    return [GroupRow(_period_name(key, period), Tally(), "period") for key in keys]


def _stretch(keys: range, period: Period, kind: str) -> GroupRow:
    """One row for a stretch of periods however long (empty ones: "gap"; some of whose rows are in
    "other dates": "folded"), named by its first and last period."""
    return GroupRow(f"{_period_name(keys[0], period)} to {_period_name(keys[-1], period)}", Tally(), kind)


def _step(period: Period) -> int:
    return 7 if period is Period.WEEK else 1


def _period_key(day: int, period: Period) -> int:
    if period is Period.DAY:
        return day
    date = datetime.date.fromordinal(day)
    if period is Period.WEEK:
        return day - date.weekday()  # the Monday that starts the ISO week
    return date.year * 12 + date.month - 1


def _period_name(key: int, period: Period) -> str:
    if period is Period.MONTH:
        return f"{key // 12:04d}-{key % 12 + 1:02d}"
    return datetime.date.fromordinal(key).isoformat()
