"""nmelab.analysis sits above the estimators and below train: it imports no configs, files or CLI."""

import subprocess
import sys

ABOVE = ("nmelab.train", "nmelab.experiments", "nmelab.cli", "nmelab.data", "ml_collections")


def test_importing_nmelab_analysis_loads_nothing_from_the_layers_above():
    code = (
        "import sys, nmelab.analysis; "
        f"print(sorted(m for m in sys.modules if m.startswith({ABOVE!r})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
