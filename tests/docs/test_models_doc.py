"""The code of docs/models.md runs: each library's block after the shared first block.

The blocks check nmelab's operators, an estimator and a regularizer step against a dense Hessian
with ``assert``; this test also checks that each block took its step (the parameters changed).
"""

import re
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

DOC = Path(__file__).resolve().parents[2] / "docs" / "models.md"
SECTIONS = {"Flax NNX": "flax.nnx", "Equinox": "equinox", "Haiku": "haiku"}
"""Each library's section heading and the module its block needs."""


def _blocks() -> list[tuple[str, str]]:
    """``[(section heading, code)]`` for every ```python block, in document order."""
    heading, blocks = "", []
    for match in re.finditer(r"^## (.+?)$|^```python\n(.*?)^```$", DOC.read_text(), re.M | re.S):
        if match.group(1) is not None:
            heading = match.group(1).strip()
        else:
            blocks.append((heading, match.group(2)))
    return blocks


def test_the_doc_has_one_setup_block_and_one_block_per_library():
    headings = [heading for heading, _ in _blocks()]
    assert headings == ["The same checks on every model", *SECTIONS]


@pytest.mark.parametrize("section", list(SECTIONS))
def test_the_example_matches_the_dense_hessian_and_takes_a_step(section):
    pytest.importorskip(SECTIONS[section], reason=f"{SECTIONS[section]} is not installed")
    (_, setup), *examples = _blocks()
    code = dict(examples)[section]
    namespace = {"__name__": f"models_doc_{section}"}
    exec(compile(setup, str(DOC), "exec"), namespace)
    exec(compile(code, f"{DOC} ({section})", "exec"), namespace)
    before, after = namespace["params"], namespace["new_params"]
    assert jax.tree.structure(after) == jax.tree.structure(before)
    step = ravel_pytree(after)[0] - ravel_pytree(before)[0]
    assert np.all(np.isfinite(step)) and float(np.max(np.abs(step))) > 0
