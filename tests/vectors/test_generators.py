"""The committed vector files are exactly what the generators in tests/tools/ write today.

A protocol change that alters any known answer fails here until the vectors are regenerated
(`python -m tests.tools.additive_vectors --out protocols/vectors/additive`,
`python -m tests.tools.ckks_vectors protocols/vectors/ckks`) and the diff is reviewed.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.tools import additive_vectors, ckks_vectors

VECTORS = Path(__file__).resolve().parents[2] / "protocols" / "vectors"


def test_additive_generator_reproduces_the_committed_files():
    generated = additive_vectors.generate()
    committed = sorted(p.name for p in (VECTORS / "additive").glob("*.json"))
    assert sorted(generated) == committed
    for name, content in generated.items():
        text = json.dumps(content, indent=1, sort_keys=True) + "\n"
        assert text == (VECTORS / "additive" / name).read_text(), name


def test_ckks_generator_reproduces_the_committed_files(tmp_path):
    ckks_vectors.main([str(tmp_path)])
    committed = sorted(p.name for p in (VECTORS / "ckks").glob("*.json"))
    assert sorted(p.name for p in tmp_path.glob("*.json")) == committed
    for name in committed:
        assert (tmp_path / name).read_text() == (VECTORS / "ckks" / name).read_text(), name
