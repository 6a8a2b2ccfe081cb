"""The pipeline on Flower (flwr 1.42, Message API), with any registered secure-sum protocol.

* `federation.FlowerFederation`: the pipeline's `Federation` port over a Flower Grid (commands
  as Messages with deadlines, enrollment with trust checks, `secure_sum.driver.drive` per sum).
* `server_app.app`: a ServerApp running the pipeline's strategy for the run config's mode.
* `client_app.app`: a ClientApp hosting the pipeline's `ClientNode` (`node_host.py`) and the
  protocol's client, both saved to and restored from `context.state` around every message.
  Secrets (identity keys, masks, shares, RR keys) live only in the node's `context.state`.
* `local.LocalGrid`: an in-process Grid (many clients on one machine, no Ray, no processes).
* `deploy`: a SuperLink and N SuperNodes on 127.0.0.1, or Flower's simulation engine
  (`run_simulation_engine`: N virtual SuperNodes on Ray), and `flwr run`.

Needs `pip install 'fedprllm-secure[flower]'`; importing the submodules without flwr raises
ModuleNotFoundError naming the extra.
"""

from __future__ import annotations

FLOWER_EXTRA_HINT = "the Flower integration needs flwr: pip install 'fedprllm-secure[flower]'"
