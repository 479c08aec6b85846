"""write_report's arguments checked as the command line checks its flags: typed one-line errors."""

import pytest

from structsent.errors import BadInputError, ConfigError
from structsent.report import build_report, write_report

from .conftest import LABELS


def test_paths_may_be_path_objects(tmp_path, labelled_csv):
    """A pathlib.Path input or output raised TypeError."""
    summary = tmp_path / "job.json"
    summary.write_text('{"rows": 40}', encoding="utf-8")
    out = tmp_path / "r.html"
    result = write_report(labelled_csv, out, job_summary=summary)
    assert result.rows == 40 and '<table id="job-figures">' in out.read_text(encoding="utf-8")
    report, _ = build_report(labelled_csv)
    assert report.overall.rows == 40 and report.labels == LABELS


@pytest.mark.parametrize(("option", "value", "message"), [
    ("by_period", "year", r"--by-period \(by_period= in Python\) must be one of auto, day, week, month, not 'year'"),
    ("fmt", "xlsx", r"--format \(fmt= in Python\) must be one of auto, csv, tsv, jsonl, parquet, not 'xlsx'"),
    ("least_certain", -1, r"--least-certain \(least_certain= in Python\) must be a whole number between 0 and 100000, "
                          "not -1"),
    ("least_certain", 2.5, "between 0 and 100000, not 2.5"),
    ("least_certain", "5", "between 0 and 100000, not '5'"),
    ("least_certain", True, "between 0 and 100000, not True"),
    ("flagged_sample", -1, r"--flagged-sample \(flagged_sample= in Python\) must be"),
    ("max_groups", 0, r"--max-groups \(max_groups= in Python\) must be a whole number between 1 and 100000, not 0"),
    ("max_groups", -3, "between 1 and 100000, not -3"),
    ("max_groups", 100_001, "between 1 and 100000, not 100001"),
    ("job_figures", [("rows", 1)], r"job_figures must be a mapping \(the job's figures by name\), not list"),
    ("job_figures", "rows=1", "job_figures must be a mapping"),
    ("overwrite", "no", r"--overwrite \(overwrite= in Python\) must be True or False, not 'no'"),
    ("overwrite", 1, "must be True or False, not 1"),
])
def test_a_bad_option_value_is_a_config_error(tmp_path, labelled_csv, option, value, message):
    """by_period="year" and fmt="xlsx" were plain ValueErrors, job_figures=[...] an AttributeError,
    least_certain=-1 or max_groups=0 were taken (or crashed later), least_certain="5" a TypeError."""
    out = tmp_path / "r.html"
    with pytest.raises(ConfigError, match=message):
        write_report(labelled_csv, out, **{option: value})
    assert not out.exists()


def test_job_figures_nested_deeper_than_a_summary_file_may_be_are_refused(tmp_path, labelled_csv):
    """A mapping 2,000 levels deep was a RecursionError; a summary file is capped at 8 levels."""
    deep: dict = {"rows": 1}
    for _ in range(2_000):
        deep = {"a": deep}
    out = tmp_path / "r.html"
    with pytest.raises(ConfigError, match="job_figures: nested more than 8 objects deep"):
        write_report(labelled_csv, out, job_figures=deep)
    nine = {"rows": 1}  # nine objects, one in another
    for _ in range(8):
        nine = {"a": nine}
    with pytest.raises(ConfigError, match="nested more than 8"):
        write_report(labelled_csv, out, job_figures=nine)
    assert not out.exists()
    eight = nine["a"]
    write_report(labelled_csv, out, job_figures=eight)
    assert "a.a.a.a.a.a.a.rows" in out.read_text(encoding="utf-8")


@pytest.mark.parametrize(("which", "value"), [("path_in", None), ("path_out", None), ("path_in", 5),
                                                ("path_out", b"r.html"), ("job_summary", 5), ("job_summary", b"s.json")])
def test_a_path_that_is_not_a_path_is_a_one_line_error(tmp_path, labelled_csv, which, value):
    """None for the input or the output was a TypeError or an AttributeError."""
    arguments = {"path_in": labelled_csv, "path_out": tmp_path / "r.html", "job_summary": None, which: value}
    with pytest.raises(BadInputError, match=rf"^{which} must be a path \(str or os.PathLike\), not "):
        write_report(arguments.pop("path_in"), arguments.pop("path_out"), **arguments)
    assert not (tmp_path / "r.html").exists()


def test_an_overwrite_that_is_not_a_bool_replaces_nothing(tmp_path, labelled_csv):
    """overwrite="no", being truthy, replaced an existing report."""
    out = tmp_path / "r.html"
    out.write_text("mine", encoding="utf-8")
    with pytest.raises(ConfigError, match="must be True or False"):
        write_report(labelled_csv, out, overwrite="no")
    assert out.read_text(encoding="utf-8") == "mine"


def test_an_empty_input_path_is_refused_not_read_as_the_working_directory(tmp_path, labelled_csv, monkeypatch):
    """"" named the working directory: with one labelled file in it, a report of that file, exit 0."""
    import shutil

    shutil.copy(labelled_csv, tmp_path / "labelled.csv")
    monkeypatch.chdir(tmp_path)
    for call in (lambda: write_report("", "r.html"), lambda: build_report("")):
        with pytest.raises(BadInputError, match=r"^the path of the labelled file \(or the directory of a Ray job's "
                                                r"files\) is empty: name it$"):
            call()
    with pytest.raises(BadInputError, match=r"^the path of the job's summary is empty"):
        write_report("labelled.csv", "r.html", job_summary="")
    assert not (tmp_path / "r.html").exists()
