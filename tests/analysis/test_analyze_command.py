"""The ``nmelab analyze`` command: argument errors (fast) and a small end-to-end run (slow)."""

import pytest

from nmelab.cli import build_parser, main


def test_analyze_is_registered_with_its_options():
    args = build_parser().parse_args(["analyze", "--steps", "5", "--num-probes", "4"])
    assert args.command == "analyze" and args.steps == 5 and args.num_probes == 4
    assert str(args.out) == "analyze_out" and args.activation == "gelu" and args.seed == 0


def test_analyze_rejects_bad_arguments(capsys):
    assert main(["analyze", "--activation", "swish"]) == 2
    assert "--activation must be one of" in capsys.readouterr().err
    assert main(["analyze", "--betas", "1", "-3"]) == 2
    with pytest.raises(SystemExit):
        build_parser().parse_args(["analyze", "--num-probes", "0"])


@pytest.mark.slow
def test_analyze_end_to_end_writes_both_figures(tmp_path, capsys):
    out = tmp_path / "figs"
    argv = ["analyze", "--steps", "20", "--num-probes", "6", "--num-iters", "8"]
    argv += ["--batch-size", "32", "--betas", "1", "30", "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    for needle in ("H = GN + NME", "NME", "Exact NME diagonal", "β"):
        assert needle in text
    for name in ("spectral_density.png", "nme_diagonal_vs_beta.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
