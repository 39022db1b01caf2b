"""`nmelab train` turns every user mistake into one line naming the argument or path, exit 2."""

import os
import re
from pathlib import Path

import pytest

from nmelab.cli import main

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "configs/digits_mlp.py")


def _run(capsys, *args):
    code = main(["train", *args])
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("model_kwargs.bogus=1", "config.model_kwargs: .*bogus"),
        ("dataset_kwargs.bogus=1", "config.dataset_kwargs: bogus is not a parameter of digits"),
        ("regularizer_params.rho=abc", "config.regularizer_params: .*rho.*'abc'"),
        ("num_epochs=1e999", "config.num_epochs: expected a finite number > 0.0, got inf"),
        ("learning_rate=1e999", "config.learning_rate: expected a finite number >= 0.0, got inf"),
        ("no_such_key=1", "unknown config key 'no_such_key'"),
    ],
)
def test_bad_set_values(tmp_path, capsys, setting, named):
    extra = ["--set", "regularizer=sam"] if "rho" in setting else []
    code, err = _run(capsys, "--config", CONFIG, "--workdir", str(tmp_path / "w"), *extra,
                     "--set", setting)  # fmt: skip
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("nmelab train: error: ")
    assert re.search(named, err), err
    assert not (tmp_path / "w").exists()  # refused before any work


def test_bad_config_files(tmp_path, capsys):
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config():\n    return (\n")
    code, err = _run(capsys, "--config", str(broken), "--workdir", str(tmp_path / "w"))
    assert code == 2 and f"{broken}:" in err and "Traceback" not in err
    text = tmp_path / "config.txt"
    text.write_text("x = 1\n")
    code, err = _run(capsys, "--config", str(text), "--workdir", str(tmp_path / "w"))
    assert code == 2 and "config.txt" in err and ".py" in err


def test_bad_workdirs(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("")
    for workdir, named in ((afile, "is not a folder"), (afile / "sub", "is a file")):
        code, err = _run(capsys, "--config", CONFIG, "--workdir", str(workdir))
        assert code == 2 and f"--workdir {workdir}" in err and named in err
    if os.geteuid() != 0:  # root writes anywhere
        readonly = tmp_path / "readonly"
        readonly.mkdir(mode=0o555)
        code, err = _run(capsys, "--config", CONFIG, "--workdir", str(readonly / "run"))
        assert code == 2 and "not writable" in err
    for name in ("summary.json", "config.json"):
        workdir = tmp_path / f"corrupt_{name}"
        workdir.mkdir()
        (workdir / name).write_text("{\n")
        code, err = _run(capsys, "--config", CONFIG, "--workdir", str(workdir))
        assert code == 2 and str(workdir / name) in err and "Traceback" not in err
