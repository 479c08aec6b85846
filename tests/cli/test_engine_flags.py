"""structsent.cli.engine_flags: one flag and one STRUCTSENT_* variable per EngineConfig field."""


def test_engine_flags_take_their_defaults_from_structsent_variables(monkeypatch):
    from structsent.cli import build_parser

    assert build_parser().parse_args(["label", "x.txt"]).pad_multiple == 8  # the label job's own default
    monkeypatch.setenv("STRUCTSENT_PAD_MULTIPLE", "16")
    monkeypatch.setenv("STRUCTSENT_TOKEN_BUDGET", "2048")
    args = build_parser().parse_args(["label", "x.txt"])
    assert (args.pad_multiple, args.token_budget) == (16, 2048)
    assert build_parser().parse_args(["label", "x.txt", "--pad-multiple", "4"]).pad_multiple == 4
