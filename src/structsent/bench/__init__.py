"""``structsent bench``: the same texts through the usual baselines and every structsent path.

workload.py builds the texts, models.py the benchmark model, runners.py the configurations,
report.py the table, JSON and chart, cli.py the subcommand.
"""
