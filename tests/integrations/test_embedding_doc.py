"""The embedding example in docs/embedding.md runs as written, for every registered protocol
(the doc invites switching the protocol name)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from fedprllm_secure.secure_sum import registry

DOC = Path(__file__).resolve().parents[2] / "docs" / "embedding.md"
CHOICE = 'registry.get("additive")'  # the protocol the example names


def _example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert blocks, "docs/embedding.md has no python example"
    code = blocks[0]
    assert len(code.strip().splitlines()) <= 25, "the example should stay short"
    assert code.count(CHOICE) == 1, f"the example should choose its protocol with {CHOICE}"
    return code


@pytest.mark.parametrize("name", registry.available())
def test_the_documented_embedding_example_runs(name: str) -> None:
    code = _example().replace(CHOICE, f"registry.get({name!r})")
    namespace: dict = {}
    exec(compile(code, str(DOC), "exec"), namespace)  # noqa: S102 - our own documentation
    step, masks = namespace["step"], namespace["masks"]
    assert namespace["info"].name == name
    assert step.contributors == (1, 2, 3, 4)
    np.testing.assert_array_equal(step.sums["mask"], sum(masks.values()))


def test_every_builtin_protocol_is_covered() -> None:
    assert {"plaintext", "additive", "ckks"} <= set(registry.available())
