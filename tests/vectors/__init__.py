"""Known-answer vectors: published RFC vectors and an independent verifier of the additive ones."""
