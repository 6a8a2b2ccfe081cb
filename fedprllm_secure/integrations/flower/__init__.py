"""Federated pruning on Flower (flwr 1.42, Message API), with any registered secure-sum protocol.

* `server_app.app`: a ServerApp that drives the protocol's server state machine over the Grid.
* `client_app.app`: a ClientApp that answers with the protocol's client state machine, saved to
  and restored from `context.state` around every message (a ClientApp process lives for one
  message). Secrets (identity keys, masks, shares) live only in the node's `context.state`.
* `local.LocalGrid`: an in-process Grid (many clients on one machine, no Ray, no processes).
* `deploy`: starts a SuperLink and N SuperNodes on 127.0.0.1 and runs the app with `flwr run`.

Needs `pip install 'fedprllm-secure[flower]'`; importing the submodules without flwr raises
ModuleNotFoundError naming the extra.
"""

from __future__ import annotations

FLOWER_EXTRA_HINT = "the Flower integration needs flwr: pip install 'fedprllm-secure[flower]'"
