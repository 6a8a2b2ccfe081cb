"""Test tools, not part of the installed package: the additive harness and the vector generators.

Regenerate the known-answer vectors from the repository root:

    python -m tests.tools.additive_vectors --out protocols/vectors/additive
    python -m tests.tools.ckks_vectors protocols/vectors/ckks
"""
