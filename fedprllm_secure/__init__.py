"""fedprllm-secure: federated pruning of LLMs where the server only learns the sum of the masks."""

__version__ = "0.1.0"
