"""`fedprllm-secure audit`: sweeps of the privacy/utility/cost trade-off, a leakage attack, a report.

* `config`: the sweep grid (flags or a JSON file) and its validation.
* `plan`: the points of a sweep, each with a stable id.
* `store`: one atomically written JSON file per finished point (resume skips them).
* `leakage`: the topic-inference attacker and the views it attacks.
* `runner`: runs the pending points, reusing one calibration per client and setting.
* `report`: results.json/.csv, PNG plots and report.md from the stored points.
"""
