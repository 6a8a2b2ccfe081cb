"""The one pruning pipeline, whatever federation carries it.

workbench.py    the model, its prunable layers, dense snapshot, evaluation windows
layout.py       mask bit packing, the layout fingerprint, chunk names
client_step.py  ClientNode: one client's side, driven by NodeCommands (+ node_state.py)
server_step.py  summed counts / statistics -> global masks
strategies.py   one strategy per mode, each talking only to a Federation
federation.py   the Federation port; inprocess.py its in-process adapter
run.py          run(config) -> results, and the reusable Pipeline
"""

from .run import FedResult, Pipeline, run
from .workbench import Workbench

__all__ = ["FedResult", "Pipeline", "Workbench", "run"]
