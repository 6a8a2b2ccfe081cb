"""Noise mechanisms on top of secure aggregation, their accounting, and the release guards.

* `randomized_response`: local DP on each mask bit (client side) and unbiased counts (server).
* `statistics`: sample-level (eps, delta)-DP of the activation statistics behind a Wanda mask.
* `accounting`: accountants that turn (eps, delta, releases) into a noise multiplier and back.
* `discrete_noise`, `distributed_encoding`, `distributed_accounting`: distributed DP inside the
  secure sum (integer noise shares, their modular encoding, Skellam / discrete Gaussian RDP).
* `cohort`: the minimum number of contributors below which counts are never released.
* `guarantees`: the honest summary of what holds against whom, for results.json.
"""
