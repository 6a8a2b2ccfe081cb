"""`python -m fedprllm_secure.cli ...`: the same as the `fedprllm-secure` console script."""

from . import run

run()
