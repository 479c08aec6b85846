"""structsent.cli.engine_flags: one flag and one STRUCTSENT_* variable per EngineConfig field."""

import re

import pytest


def test_engine_flags_take_their_defaults_from_structsent_variables(monkeypatch):
    from structsent.cli import build_parser

    assert build_parser().parse_args(["label", "x.txt"]).pad_multiple == 8  # the label job's own default
    monkeypatch.setenv("STRUCTSENT_PAD_MULTIPLE", "16")
    monkeypatch.setenv("STRUCTSENT_TOKEN_BUDGET", "2048")
    args = build_parser().parse_args(["label", "x.txt"])
    assert (args.pad_multiple, args.token_budget) == (16, 2048)
    assert build_parser().parse_args(["label", "x.txt", "--pad-multiple", "4"]).pad_multiple == 4


def test_a_variable_that_does_not_parse_stops_only_commands_that_run_the_engine(monkeypatch, tmp_path, capsys):
    """STRUCTSENT_TOKEN_BUDGET=abc made every command fail as the parser was built: `structsent
    report` (which loads no model), --help and --version too."""
    import pytest

    from structsent.cli import build_parser, main
    from structsent.cli.engine_flags import engine_config
    from structsent.errors import ConfigError

    monkeypatch.setenv("STRUCTSENT_TOKEN_BUDGET", "abc")
    with pytest.raises(SystemExit) as version:
        main(["--version"])
    assert version.value.code == 0 and "structsent" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="^STRUCTSENT_TOKEN_BUDGET='abc': expected an integer in ASCII digits$"):
        engine_config(build_parser().parse_args(["label", "x.txt"]))
    assert engine_config(build_parser().parse_args(["label", "x.txt", "--token-budget", "512"])).token_budget == 512
    labelled = tmp_path / "out.csv"
    labelled.write_text("text,label,score,prob_负面,prob_正面,error\n好,正面,0.9,0.1,0.9,\n", encoding="utf-8")
    assert main(["report", str(labelled), "-o", str(tmp_path / "r.html")]) == 0
    assert main(["label", str(labelled), "-o", str(tmp_path / "o.csv")]) == 2
    assert capsys.readouterr().err.strip().endswith("STRUCTSENT_TOKEN_BUDGET='abc': expected an integer in ASCII digits")


def test_a_choice_variable_with_a_bad_value_is_named_as_the_variable(monkeypatch):
    """STRUCTSENT_PRECISION=fp64 said "precision='fp64': expected one of ...", as if a flag had been
    given; the flag overrides the variable as before, and a good value is taken."""
    import pytest

    from structsent.cli import build_parser
    from structsent.cli.engine_flags import engine_config
    from structsent.errors import ConfigError

    for name, value, says in [("PRECISION", "fp64", "expected one of auto, fp32, fp16, bf16, int8"),
                              ("DEVICE", "gpu", "expected one of auto, cpu, cuda, cuda:N"),
                              ("LONG_TEXT", "window", "expected one of truncate, windows")]:
        monkeypatch.setenv(f"STRUCTSENT_{name}", value)
        with pytest.raises(ConfigError, match=f"^STRUCTSENT_{name}='{value}': {says}$"):
            engine_config(build_parser().parse_args(["label", "x.txt"]))
        monkeypatch.delenv(f"STRUCTSENT_{name}")
    monkeypatch.setenv("STRUCTSENT_DEVICE", "x: y")  # a value holding ": " is shown once, whole
    with pytest.raises(ConfigError, match="^STRUCTSENT_DEVICE='x: y': expected one of auto, cpu, cuda, cuda:N$"):
        engine_config(build_parser().parse_args(["label", "x.txt"]))
    monkeypatch.delenv("STRUCTSENT_DEVICE")
    monkeypatch.setenv("STRUCTSENT_PRECISION", "fp64")
    assert engine_config(build_parser().parse_args(["label", "x.txt", "--precision", "int8"])).precision.value == "int8"
    monkeypatch.setenv("STRUCTSENT_PRECISION", "int8")
    assert engine_config(build_parser().parse_args(["label", "x.txt"])).precision.value == "int8"


def test_an_integer_variable_out_of_range_is_named_as_the_variable(monkeypatch):
    """STRUCTSENT_TOKEN_BUDGET=-1 said "token_budget=-1: must be in ...", a field the user never typed."""
    import re

    import pytest

    from structsent.cli import build_parser
    from structsent.cli.engine_flags import engine_config
    from structsent.errors import ConfigError

    monkeypatch.setenv("STRUCTSENT_TOKEN_BUDGET", "-1")
    with pytest.raises(ConfigError, match=r"^STRUCTSENT_TOKEN_BUDGET='-1': must be in 3\.\.2147483647$"):
        engine_config(build_parser().parse_args(["label", "x.txt"]))
    for written in ("+2", "-0", "002"):  # named as written, not as the number it reads as
        monkeypatch.setenv("STRUCTSENT_TOKEN_BUDGET", written)
        with pytest.raises(ConfigError, match="^" + re.escape(f"STRUCTSENT_TOKEN_BUDGET='{written}': must be ")):
            engine_config(build_parser().parse_args(["label", "x.txt"]))
    monkeypatch.delenv("STRUCTSENT_TOKEN_BUDGET")
    monkeypatch.setenv("STRUCTSENT_WINDOW_STRIDE", "600")  # checked against max_length: named as the variable too
    with pytest.raises(ConfigError, match=r"^STRUCTSENT_WINDOW_STRIDE='600': must be in 1\.\.max_length-2 \(510\)$"):
        engine_config(build_parser().parse_args(["label", "x.txt"]))
    windows = ["--long-text", "windows", "--max-length", "1024"]
    assert engine_config(build_parser().parse_args(["label", "x.txt", *windows])).window_stride == 600
    with pytest.raises(ConfigError, match=r"^window_stride=700: "):  # a flag's value is named as before
        engine_config(build_parser().parse_args(["label", "x.txt", "--window-stride", "700"]))


def test_a_window_stride_without_windows_is_refused_naming_what_the_user_set(monkeypatch, tmp_path, capsys):
    """--window-stride (or STRUCTSENT_WINDOW_STRIDE) with --long-text truncate, the default, was
    accepted and ignored: no text is cut into windows then."""
    from structsent.cli import build_parser, main
    from structsent.cli.engine_flags import engine_config

    reviews = tmp_path / "in.csv"
    reviews.write_text("text\n好\n", encoding="utf-8")
    commands = [["label", str(reviews), "-o", str(tmp_path / "out.csv")], ["serve", "--port", "0"]]
    for command in commands:
        assert main([*command, "--window-stride", "64"]) == 2, command
        assert capsys.readouterr().err == "structsent: error: --window-stride applies only with --long-text windows\n"
    monkeypatch.setenv("STRUCTSENT_WINDOW_STRIDE", "64")
    for command in commands:
        assert main(command) == 2, command
        assert capsys.readouterr().err == ("structsent: error: STRUCTSENT_WINDOW_STRIDE applies only with "
                                           "--long-text windows\n")
    assert main([*commands[0], "--window-stride", "0"]) == 2  # a value out of range is said as such first
    assert "structsent: error: --window-stride 0: must be in 1..2147483647" in capsys.readouterr().err
    assert engine_config(build_parser().parse_args(["serve", "--long-text", "windows"])).window_stride == 64
    assert list(tmp_path.iterdir()) == [reviews]


def test_a_structsent_variable_that_structsent_does_not_read_is_warned_of_with_the_one_meant():
    """STRUCTSENT_THREADS=4 (for --threads, the flag's earlier name) was ignored without a word."""
    from structsent.cli.engine_flags import known_variables, unknown_variable_warnings

    environ = {"STRUCTSENT_THREADS": "4", "STRUCTSENT_BATCH_TOKENS": "2048", "STRUCTSENT_PRECISON": "int8",
               "STRUCTSENT_FOO": "1", "STRUCTSENT_NUM_THREADS": "2", "STRUCTSENT_CACHE": "/tmp/c", "OTHER": "x"}
    assert unknown_variable_warnings(environ) == [
        "structsent: warning: STRUCTSENT_BATCH_TOKENS is set, but structsent reads no such variable "
        "(did you mean STRUCTSENT_TOKEN_BUDGET?)",
        "structsent: warning: STRUCTSENT_FOO is set, but structsent reads no such variable",
        "structsent: warning: STRUCTSENT_PRECISON is set, but structsent reads no such variable "
        "(did you mean STRUCTSENT_PRECISION?)",
        "structsent: warning: STRUCTSENT_THREADS is set, but structsent reads no such variable "
        "(did you mean STRUCTSENT_NUM_THREADS?)",
    ]
    assert unknown_variable_warnings({name: "1" for name in known_variables()}) == []


def test_ray_address_without_the_ray_engine_is_refused_before_any_work(tmp_path, capsys):
    """It was ignored: the job ran here, not on the cluster named."""
    from structsent.cli import main

    (tmp_path / "in.txt").write_text("好吃\n", encoding="utf-8")
    assert main(["label", str(tmp_path / "in.txt"), "-o", str(tmp_path / "out.jsonl"), "--ray-address", "ray://h:1"]) == 2
    assert capsys.readouterr().err == "structsent: error: --ray-address is for --engine ray; add --engine ray to run " \
                                      "on that cluster\n"
    assert not (tmp_path / "out.jsonl").exists()


def test_every_structsent_variable_the_source_names_is_a_known_one():
    """A variable added to the code but not to the list would be warned of as unknown while read."""
    import re
    from pathlib import Path

    import structsent
    from structsent.cli.engine_flags import known_variables

    source = Path(structsent.__file__).parent
    named = {name for path in source.rglob("*.py")
             for name in re.findall(r'"(STRUCTSENT_[A-Z_]+)"', path.read_text(encoding="utf-8"))}
    assert named and named - {"STRUCTSENT_"} <= set(known_variables())


def test_a_value_refused_once_the_model_is_known_names_the_flag_or_the_variable(monkeypatch, tmp_path, capsys):
    """A token budget under the model's length is refused by the plan, once the model is loaded: it
    said "token_budget=100: ..." on the command line, a name the user never typed, whether the value
    came from --token-budget or STRUCTSENT_TOKEN_BUDGET; other settings' refusals too ("max_queue=0")."""
    from structsent.cli import main

    source = tmp_path / "in.txt"
    source.write_text("好评\n", encoding="utf-8")
    assert main(["label", str(source), "-o", str(tmp_path / "a.jsonl"), "--token-budget", "100"]) == 2
    # (before it, maybe the warning that the model was exported on its first use on ONNX Runtime)
    assert capsys.readouterr().err.splitlines()[-1] == "structsent: error: --token-budget 100: must be at least max_length (512)"
    monkeypatch.setenv("STRUCTSENT_TOKEN_BUDGET", "100")
    assert main(["label", str(source), "-o", str(tmp_path / "b.jsonl")]) == 2
    assert capsys.readouterr().err.strip() == \
        "structsent: error: STRUCTSENT_TOKEN_BUDGET='100': must be at least max_length (512)"
    monkeypatch.delenv("STRUCTSENT_TOKEN_BUDGET")
    assert main(["serve", "--max-queue", "0"]) == 2
    assert capsys.readouterr().err.strip() == "structsent: error: --max-queue 0: must be at least 1"
    # A header cap no request fits (every one answered 431, /health's too: a server never ready).
    assert main(["serve", "--max-header-bytes", "10"]) == 2
    assert capsys.readouterr().err.strip() == ("structsent: error: --max-header-bytes 10: must be at least 1024 (a "
                                               "browser's request headers alone take several hundred bytes)")
    assert not (tmp_path / "a.jsonl").exists() and not (tmp_path / "b.jsonl").exists()


def test_a_flag_given_beside_its_variable_is_what_a_refusal_names_as_typed(monkeypatch, tmp_path, capsys):
    """STRUCTSENT_TOKEN_BUDGET=100 and --token-budget 100 named the variable, which the flag had
    overridden; an alias (--batch-tokens, --threads) was named by the flag's main spelling."""
    from structsent.cli import main

    source = tmp_path / "in.txt"
    source.write_text("好评\n", encoding="utf-8")
    out = ["-o", str(tmp_path / "out.jsonl")]
    monkeypatch.setenv("STRUCTSENT_TOKEN_BUDGET", "100")
    monkeypatch.setenv("STRUCTSENT_WINDOW_STRIDE", "10")
    for flags, says in [(["--window-stride", "10"], "--window-stride applies only with --long-text windows"),
                        (["--token-budget", "100"], "--token-budget 100: must be at least max_length (512)"),
                        (["--batch-tokens=100"], "--batch-tokens 100: must be at least max_length (512)"),
                        (["--threads", "5000"], "--threads 5000: must be in 0..1024"),
                        # given twice: argparse keeps the last value, and the message names its spelling
                        (["--token-budget", "4096", "--batch-tokens", "100"],
                         "--batch-tokens 100: must be at least max_length (512)")]:
        if "--window-stride" not in flags:
            monkeypatch.delenv("STRUCTSENT_WINDOW_STRIDE", raising=False)
        assert main(["label", str(source), *out, *flags]) == 2, flags
        assert capsys.readouterr().err.strip() == f"structsent: error: {says}", flags
    assert main(["label", str(source), *out]) == 2  # the variable alone: named as such
    assert capsys.readouterr().err.strip() == \
        "structsent: error: STRUCTSENT_TOKEN_BUDGET='100': must be at least max_length (512)"


def test_a_runtime_refusal_says_which_variables_set_what_it_names(monkeypatch, tmp_path, capsys):
    """The runtime's refusals name a setting in their own words ("device 'cuda:1': CUDA is not
    available", "precision 'bf16' is not offered by the onnx backend") and said nothing of the
    STRUCTSENT_* variable that set it: a variable left in a shell profile is what a user cannot see."""
    from structsent.cli import main

    source = tmp_path / "in.txt"
    source.write_text("好评\n", encoding="utf-8")
    out = ["-o", str(tmp_path / "out.jsonl")]
    monkeypatch.setenv("STRUCTSENT_DEVICE", "cuda:1")
    assert main(["label", str(source), *out]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "install a CUDA build of torch (STRUCTSENT_DEVICE='cuda:1' is set in the environment)")
    assert main(["label", str(source), *out, "--device", "cuda"]) == 2  # the flag set it: nothing to add
    assert capsys.readouterr().err.strip().endswith("install a CUDA build of torch")
    monkeypatch.delenv("STRUCTSENT_DEVICE")
    monkeypatch.setenv("STRUCTSENT_BACKEND", "onnx")
    monkeypatch.setenv("STRUCTSENT_PRECISION", "bf16")
    assert main(["label", str(source), *out]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "(STRUCTSENT_BACKEND='onnx', STRUCTSENT_PRECISION='bf16' are set in the environment)")
    monkeypatch.delenv("STRUCTSENT_BACKEND")
    monkeypatch.delenv("STRUCTSENT_PRECISION")
    monkeypatch.setenv("STRUCTSENT_MAX_LENGTH", "64")  # the other side of a refusal that names a flag
    assert main(["label", str(source), *out, "--token-budget", "10"]) == 2
    assert capsys.readouterr().err.strip() == ("structsent: error: --token-budget 10: must be at least max_length (64) "
                                               "(STRUCTSENT_MAX_LENGTH='64' is set in the environment)")
    monkeypatch.delenv("STRUCTSENT_MAX_LENGTH")
    monkeypatch.setenv("STRUCTSENT_DEVICE", "cpu")
    monkeypatch.setenv("STRUCTSENT_PAD_MULTIPLE", "16")
    monkeypatch.setenv("STRUCTSENT_BACKEND", "torch")
    assert main(["label", str(source), *out, "--attention", "packed"]) == 2  # the one the reason names, not backend
    assert capsys.readouterr().err.strip().endswith(
        "--pad-multiple 16 asks for texts padded to its multiples; use one of them (--attention auto pads then) "
        "(STRUCTSENT_PAD_MULTIPLE='16' is set in the environment)")
    monkeypatch.delenv("STRUCTSENT_PAD_MULTIPLE")
    assert main(["label", str(source), *out, "--model", "~no-such-user-x7/device-backend"]) == 2  # words of a path
    assert capsys.readouterr().err.strip().endswith("give the directory in full")
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize(("flags", "says"), [
    (["--device", "cuda"], "use --device cpu or install a CUDA build of torch"),
    (["--backend", "onnx", "--attention", "packed"],
     "--attention packed runs with the torch backend; use --backend torch or --attention auto"),
    (["--backend", "onnx", "--precision", "bf16"], "use --backend torch for bf16/fp16"),
])
def test_advice_on_settings_names_the_command_s_flags(tmp_path, capsys, flags, says):
    """It spoke the library's words on the command line: "use device='cpu'", "use backend=torch"."""
    import torch

    if flags[1] == "cuda" and torch.cuda.is_available():
        pytest.skip("this host has CUDA")
    from structsent.cli import main

    source = tmp_path / "in.txt"
    source.write_text("好\n", encoding="utf-8")
    assert main(["label", str(source), "-o", str(tmp_path / "out.csv"), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("structsent: error: ") and err.endswith(says), err
    assert not re.search(r"\b(device|backend|attention|precision)=", err), err


def test_help_says_the_value_a_variable_sets_beside_the_default(monkeypatch):
    """--help showed `--device ... (default: auto)` while STRUCTSENT_DEVICE=cpu was in effect."""
    from structsent.cli import build_parser

    monkeypatch.setenv("STRUCTSENT_DEVICE", "cpu")
    monkeypatch.setenv("STRUCTSENT_TOKEN_BUDGET", "50%")  # argparse formats help with %: no crash
    for command in ("label", "serve"):
        parser = build_parser()._subparsers._group_actions[0].choices[command]
        text = " ".join(parser.format_help().split())
        assert "(default: auto); STRUCTSENT_DEVICE='cpu' sets it now" in text, command
        assert "STRUCTSENT_TOKEN_BUDGET='50%' sets it now" in text, command
        assert "STRUCTSENT_NUM_THREADS" not in text.split("--num-threads", 1)[1].split("--", 1)[0]


@pytest.mark.parametrize(("value", "shown"), [(" cpu", "' cpu'"), ("", "''"), ("cpu ", "'cpu '"), ("CPU", "CPU")])
def test_a_refused_flag_value_with_blanks_is_quoted(tmp_path, capsys, value, shown):
    """"--device  cpu: expected ..." hid the space that made it wrong, "--device : ..." the empty value."""
    from structsent.cli import main

    source = tmp_path / "in.txt"
    source.write_text("好\n", encoding="utf-8")
    assert main(["label", str(source), "--device", value]) == 2
    assert capsys.readouterr().err == f"structsent: error: --device {shown}: expected one of auto, cpu, cuda, cuda:N\n"


def test_setting_names_inside_a_path_are_left_as_they_are():
    """"/runs/precision=fp16 holds an ONNX model" became "/runs/--precision fp16 holds ...", a path that
    does not exist (sweep directories are often named so)."""
    from structsent.cli import _settings_as_flags

    flags = {"precision": "--precision", "backend": "--backend"}
    assert _settings_as_flags("/runs/precision=fp16 holds an ONNX model, which only backend='onnx' runs", flags) == \
        "/runs/precision=fp16 holds an ONNX model, which only --backend onnx runs"
    assert _settings_as_flags("runs/lr=1,precision=fp16/m: no such directory", flags) == \
        "runs/lr=1,precision=fp16/m: no such directory"
