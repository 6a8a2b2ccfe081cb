"""Client side: activation statistics, scores and the local mask, from the client's own samples."""
