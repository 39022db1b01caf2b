"""Every user mistake gets one clear line and exit code 2, never a traceback.

One table of command-line cases, each run as a real ``python -m nmelab`` process (the inherited
``PYTHONPATH`` and ``JAX_PLATFORMS``), and one table of Python-API cases. A CLI case checks the
exit code, that stderr names the argument or path that was wrong, and that stderr holds no
``Traceback``. Every case is cheap: an argument error must be found before any training. The two
cases that need a checkpoint train digits for two steps first and are marked slow (about 30 s
each under load, most of it JAX's import and compilation in two processes).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

import nmelab
import toy_problems as tp

REPO = Path(__file__).resolve().parents[2]
DIGITS = str(REPO / "configs" / "digits_mlp.py")
CIFAR = str(REPO / "configs" / "cifar10_wrn16_4.py")
IMAGENET = str(REPO / "configs" / "imagenet_resnet50.py")
TINY = ["--set", "num_epochs=1", "--set", "eval_every_epochs=1"]
CASE_TIMEOUT_S = 300  # a case that is not refused up front may start a sweep: fail, don't hang


@dataclasses.dataclass(frozen=True)
class Case:
    """One command-line mistake.

    Attributes:
      argv: the arguments after ``nmelab``; ``{tmp}`` is the case's temporary folder.
      names: a substring the one ``nmelab <command>: error:`` line must hold (the argument or
        path); ``{tmp}`` is substituted.
      setup: makes the files the case needs under ``tmp``.
      check: an extra assertion on ``tmp`` after the run (e.g. no run folders left behind).
    """

    argv: tuple[str, ...]
    names: str
    setup: Callable[[Path], None] | None = None
    check: Callable[[Path], None] | None = None


def _file(relative: str, text: str = "x") -> Callable[[Path], None]:
    def make(tmp: Path) -> None:
        path = tmp / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    return make


def _config_copy(name: str, text: str | None = None) -> Callable[[Path], None]:
    def make(tmp: Path) -> None:
        (tmp / name).write_text(Path(DIGITS).read_text() if text is None else text)

    return make


def _read_only_dir(tmp: Path) -> None:
    (tmp / "ro").mkdir()
    (tmp / "ro").chmod(0o555)


def _no_run_folders(tmp: Path) -> None:
    out = tmp / "out"
    left = sorted(p.name for p in out.rglob("*") if p.is_dir()) if out.exists() else []
    assert not left, f"a refused sweep left folders behind: {left}"


def _trained_then_damaged(tmp: Path) -> None:
    """A digits run killed before its summary, then every checkpoint file overwritten."""
    argv = ["train", "--config", DIGITS, "--workdir", str(tmp / "run"), *TINY]
    argv += ["--set", "checkpoint_every_steps=1"]
    done = subprocess.run([sys.executable, "-m", "nmelab", *argv], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    (tmp / "run" / "summary.json").unlink()
    files = [p for p in (tmp / "run" / "checkpoints").rglob("*") if p.is_file()]
    assert files, "the setup run wrote no checkpoint"
    for path in files:
        path.write_bytes(os.urandom(64))


def _analysis_workdir(damaged: bool) -> Callable[[Path], None]:
    def make(tmp: Path) -> None:
        if damaged:
            _trained_then_damaged(tmp)
        else:
            (tmp / "run").mkdir()
            shutil.copy(DIGITS, tmp / "run" / "config.py")

    return make


CASES: dict[str, Case] = {
    # nmelab activations
    "activations --out under a file": Case(
        ("activations", "--out", "{tmp}/file/fig.png"), "{tmp}/file", _file("file")
    ),
    "activations --out is a folder": Case(("activations", "--out", "{tmp}"), "--out {tmp}"),
    "activations --betas not > 0": Case(
        ("activations", "--betas", "1", "-2", "--out", "{tmp}/a.png"), "--betas"
    ),
    "activations --betas nan": Case(
        ("activations", "--betas", "nan", "--out", "{tmp}/a.png"), "--betas"
    ),
    # nmelab train: --set values checked against the target's fields
    "train --set model_kwargs.bogus": Case(
        ("train", "--config", DIGITS, "--workdir", "{tmp}/run", "--set", "model_kwargs.bogus=1"),
        "bogus",
    ),
    "train --set dataset_kwargs.bogus": Case(
        ("train", "--config", DIGITS, "--workdir", "{tmp}/run", "--set", "dataset_kwargs.bogus=1"),
        "bogus",
    ),
    "train --set regularizer_params.rho=abc": Case(
        ("train", "--config", DIGITS, "--workdir", "{tmp}/run", "--set", "regularizer=sam")
        + ("--set", "regularizer_params.rho=abc"),
        "rho",
    ),
    "train --set num_epochs=1e999": Case(
        ("train", "--config", DIGITS, "--workdir", "{tmp}/run", *TINY, "--set", "num_epochs=1e999"),
        "num_epochs",
    ),
    "train --set learning_rate=1e999": Case(
        ("train", "--config", DIGITS, "--workdir", "{tmp}/run", *TINY)
        + ("--set", "learning_rate=1e999"),
        "learning_rate",
    ),
    # nmelab train: config loading names the file (and line)
    "train --config missing": Case(
        ("train", "--config", "{tmp}/missing.py", "--workdir", "{tmp}/run"), "{tmp}/missing.py"
    ),
    "train --config without .py": Case(
        ("train", "--config", "{tmp}/digits.txt", "--workdir", "{tmp}/run"),
        "{tmp}/digits.txt",
        _config_copy("digits.txt"),
    ),
    "train --config with a syntax error": Case(
        ("train", "--config", "{tmp}/broken.py", "--workdir", "{tmp}/run"),
        "{tmp}/broken.py",
        _config_copy("broken.py", "def get_config(:\n    pass\n"),
    ),
    # nmelab train: the workdir is checked before any work
    "train --workdir under a file": Case(
        ("train", "--config", DIGITS, "--workdir", "{tmp}/file/run", *TINY),
        "{tmp}/file",
        _file("file"),
    ),
    "train --workdir is a file": Case(
        ("train", "--config", DIGITS, "--workdir", "{tmp}/file", *TINY), "{tmp}/file", _file("file")
    ),
    "train --workdir read-only": Case(
        ("train", "--config", DIGITS, "--workdir", "{tmp}/ro/run", *TINY),
        "{tmp}/ro",
        _read_only_dir,
    ),
    "train corrupt summary.json": Case(
        ("train", "--config", DIGITS, "--workdir", "{tmp}/run", *TINY),
        "{tmp}/run/summary.json",
        _file("run/summary.json", "{\n"),
    ),
    "train every checkpoint damaged": Case(
        ("train", "--config", DIGITS, "--workdir", "{tmp}/run", *TINY)
        + ("--set", "checkpoint_every_steps=1"),
        "{tmp}/run/checkpoints",
        _trained_then_damaged,
    ),
    "train data_dir missing": Case(
        ("train", "--config", CIFAR, "--workdir", "{tmp}/run")
        + ("--set", "data_dir={tmp}/nonexistent"),
        "{tmp}/nonexistent",
    ),
    "train imagenet data_dir is a file": Case(
        ("train", "--config", IMAGENET, "--workdir", "{tmp}/run")
        + ("--set", "data_dir={tmp}/file"),
        "{tmp}/file",
        _file("file"),
    ),
    # nmelab reproduce: output paths and --data-dir checked before any task starts
    "reproduce --out is a file": Case(
        ("reproduce", "--report-only", "--out", "{tmp}/file"), "{tmp}/file", _file("file")
    ),
    "reproduce --export-csv under a file": Case(
        ("reproduce", "--report-only", "--out", "{tmp}/out", "--export-csv", "{tmp}/file/r.csv"),
        "{tmp}/file",
        _file("file"),
        lambda tmp: _assert_missing(tmp / "out" / "report.md"),
    ),
    "reproduce --data-dir missing at paper scale": Case(
        ("reproduce", "--scale", "paper", "--data-dir", "{tmp}/nonexistent", "--workers", "1")
        + ("--out", "{tmp}/out"),
        "{tmp}/nonexistent",
        check=_no_run_folders,
    ),
    "reproduce --threads -1": Case(
        ("reproduce", "--report-only", "--threads", "-1", "--out", "{tmp}/out"), "--threads"
    ),
    # nmelab analyze: a trained run's workdir
    "analyze --workdir without a checkpoint": Case(
        ("analyze", "--workdir", "{tmp}/run"), "{tmp}/run", _analysis_workdir(damaged=False)
    ),
    "analyze --workdir with a damaged checkpoint": Case(
        ("analyze", "--workdir", "{tmp}/run"), "{tmp}/run", _analysis_workdir(damaged=True)
    ),
    "analyze --out under a file": Case(
        ("analyze", "--epochs", "1", "--out", "{tmp}/file/out"), "{tmp}/file", _file("file")
    ),
}


def _assert_missing(path: Path) -> None:
    assert not path.exists(), f"{path} was written although an argument was refused"


SLOW = {"train every checkpoint damaged", "analyze --workdir with a damaged checkpoint"}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in CASES]
)
def test_cli_mistake_exits_2_with_one_clear_line(name, tmp_path):
    case = CASES[name]
    if name == "train --workdir read-only" and os.geteuid() == 0:
        pytest.skip("running as root: permission bits do not stop root, the folder is writable")
    if case.setup is not None:
        case.setup(tmp_path)
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in case.argv]
    done = subprocess.run(
        [sys.executable, "-m", "nmelab", *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=CASE_TIMEOUT_S,
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, f"exit {done.returncode}; stderr:\n{done.stderr}"
    # Libraries may log before the error (orbax via absl); argparse's own errors for unknown
    # flags say "nmelab: error:" and so do not count as the sub-command's clear error.
    prefix = f"nmelab {argv[0]}: error: "
    errors = [line for line in done.stderr.splitlines() if line.startswith(prefix)]
    assert len(errors) == 1, f"expected one line starting {prefix!r}; stderr:\n{done.stderr}"
    assert case.names.replace("{tmp}", str(tmp_path)) in errors[0], done.stderr
    if case.check is not None:
        case.check(tmp_path)


# --------------------------------------------------------------------------------------------
# the Python API: a ValueError naming the argument
# --------------------------------------------------------------------------------------------


def _problem():
    return tp.mlp_problem("tanh", "cross_entropy")


def _empty_batch():
    objective, params, (x, y) = _problem()
    nmelab.hessian(objective, params, (x[:0], y[:0]))


def _non_finite_x(value: float) -> Callable[[], None]:
    def call() -> None:
        objective, params, (x, y) = _problem()
        nmelab.trace_split(objective, params, (x.at[0, 0].set(value), y), jax.random.key(0), 2)

    return call


def _split_product_mismatched_v():
    objective, params, batch = _problem()
    v = jax.tree.map(jnp.ones_like, params)
    v[1]["b"] = jnp.ones(7)
    nmelab.split_product(objective, params, batch, v)


API_CASES: dict[str, tuple[Callable[[], None], str]] = {
    "empty batch": (_empty_batch, "batch x is empty"),
    "NaN in x": (
        _non_finite_x(jnp.nan),
        "batch x contains NaN or inf, must be finite: found 1 NaN",
    ),
    "inf in x": (
        _non_finite_x(jnp.inf),
        "batch x contains NaN or inf, must be finite: found 0 NaN and 1 inf",
    ),
    "split_product mismatched v": (_split_product_mismatched_v, "v[1]['b'] must have shape (4,)"),
}


@pytest.mark.parametrize("name", list(API_CASES))
def test_api_mistake_raises_a_value_error_naming_the_argument(name):
    call, names = API_CASES[name]
    with pytest.raises(ValueError) as info:
        call()
    assert names in str(info.value)


def test_output_piped_into_head_ends_quietly():
    import subprocess
    import sys

    main = "import sys; from nmelab.cli import main; sys.exit(main())"
    command = f"{sys.executable} -c '{main}' reproduce --scale small --plan --json | head -n 1"
    done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=300)
    assert done.stdout.count("\n") == 1
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
