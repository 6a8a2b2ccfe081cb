"""Server side: from aggregate counts to the global mask, and applying it to the global model."""
