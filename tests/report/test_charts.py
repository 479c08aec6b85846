"""The inline SVG charts: labels escaped and told apart."""

import re

from structsent.report.charts import Bar, horizontal_bars


def test_bars_whose_names_start_alike_carry_labels_of_their_own():
    """Names were cut to 22 characters, so two groups alike in their first 21 had one label."""
    names = ["外卖" * 12 + "甲", "外卖" * 12 + "乙", "外卖" * 8 + "外… [1]", "短"]
    svg = horizontal_bars([Bar(name, 0.5, "50%", name, "#000") for name in names], label="shares")
    labels = re.findall(r'class="name"><title>[^<]*</title>([^<]*)</text>', svg)
    assert len(labels) == 4 and len(set(labels)) == 4
    assert all(len(label) <= 22 for label in labels) and labels[3] == "短"
