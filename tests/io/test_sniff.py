"""The signs of a file read as what it is not (io/sniff.py), which the label job and the report share."""

import pytest

from structsent.errors import BadInputError
from structsent.io.sniff import check_header, check_not_utf16

TEXT = "这家外卖送得很快\n差评\n"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
@pytest.mark.parametrize("text", [TEXT, "id,text\n1,好\n"], ids=["chinese only", "ascii header"])
def test_utf16_is_told_from_its_first_bytes(encoding, text):
    with pytest.raises(BadInputError, match=r"^in\.txt: not UTF-8 text \((UTF-16|NUL bytes).*save it as UTF-8"):
        check_not_utf16(text.encode(encoding), "in.txt")


def test_utf32_with_its_mark_is_named_so():
    with pytest.raises(BadInputError, match=r"^in\.txt: not UTF-8 text \(UTF-32"):
        check_not_utf16(TEXT.encode("utf-32"), "in.txt")


def test_a_head_cut_inside_a_character_is_still_utf8():
    head = ("好" * 10 + "\x00").encode()
    check_not_utf16(head + "差".encode()[:2], "in.txt")


@pytest.mark.parametrize("head", [TEXT.encode(), b"\xef\xbb\xbfid,text\n", b"", b"\n", b"a\xff\n",
                                  "第一行\x00有NUL\n".encode()])
def test_utf8_and_other_bytes_pass(head):
    check_not_utf16(head, "in.txt")


@pytest.mark.parametrize("header, delimiter, said", [
    (["id;text"], ",", "holding semicolons: not CSV; save it with commas (or with tabs and pass --format tsv)"),
    (["id\ttext"], ",", "holding tabs: not CSV; pass --format tsv"),
    (["id,text"], "\t", "holding commas: not TSV; pass --format csv"),
    (["id;text"], "\t", "holding semicolons: not TSV; save it with tabs (or with commas and pass --format csv)"),
    (["sep=;"], ",", "line 1 is 'sep=;', Excel's delimiter hint, not a header; delete that line, then save it "
                     "with commas"),
    (["sep=", ""], ",", "line 1 is 'sep=,', Excel's delimiter hint, not a header; delete that line"),
    (["sep=\t"], ",", "line 1 is 'sep=\\t', Excel's delimiter hint, not a header; delete that line, then pass "
                      "--format tsv"),
])
def test_a_header_read_with_the_wrong_delimiter_is_refused_with_what_to_do(header, delimiter, said):
    with pytest.raises(BadInputError) as raised:
        check_header(header, delimiter, "in.csv")
    assert str(raised.value).startswith("in.csv: ") and said in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("header, delimiter, text_column", [
    (["id", "text"], ",", None), (["text"], ",", "text"), (["评论；好评"], ",", None),  # (a full-width semicolon)
    (["id;text"], ",", "id;text"),  # the user named that one column: taken as it is
    (["id", "text;raw"], ",", None),  # more than one column: the file's own delimiter
])
def test_headers_of_their_own_delimiter_or_a_named_column_pass(header, delimiter, text_column):
    check_header(header, delimiter, "in.csv", text_column)
