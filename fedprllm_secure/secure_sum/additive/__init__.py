"""`additive`: pairwise-masked secure sum (Bonawitz et al. SecAgg, SecAgg+ graphs).

The server learns only the sum of the surviving clients' vectors, even when clients drop out at any
round, as long as at least max(quorum, min_contributors) remain (quorum = max(t, floor(2n/3) + 1)
roster signatures on the survivor list). Normative spec: protocols/additive.md.
"""

from __future__ import annotations

from ..registry import ProtocolInfo, register
from .client import AdditiveClient
from .enrollment import enroll, node_enroll, prepare_options, publish, trust_facts
from .server import AdditiveServer

__all__ = ["AdditiveClient", "AdditiveServer", "INFO", "enroll"]


INFO = register(
    ProtocolInfo(
        name="additive",
        description="pairwise-masked secure sum (SecAgg/SecAgg+): the server sees only the sum",
        secure=True,
        make_server=lambda config, rng: AdditiveServer(config, rng),
        make_client=lambda config, client_id, rng, inputs, identity: AdditiveClient(
            config, client_id, rng, inputs, identity
        ),
        enroll=enroll,
        prepare_options=prepare_options,
        node_enroll=node_enroll,
        publish=publish,
        trust_facts=trust_facts,
        # every client refuses to sign or unmask a survivor list shorter than this
        cohort_option="min_contributors",
        input_rounds=("masked-input",),  # a client stopping mid-stream aborts the session
        option_names=("threshold", "neighbors", "min_contributors"),
        check_options=prepare_options,
    )
)
