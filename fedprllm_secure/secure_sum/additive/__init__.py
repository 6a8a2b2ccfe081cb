"""`additive`: pairwise-masked secure sum (Bonawitz et al. SecAgg, SecAgg+ graphs).

The server learns only the sum of the surviving clients' vectors, even when clients drop out at any
round, as long as at least max(quorum, min_contributors) remain (quorum = max(t, floor(2n/3) + 1)
roster signatures on the survivor list). Normative spec: protocols/additive.md.
"""

from __future__ import annotations

from ...randomness import RandomSource
from ..api import ClientId, SessionConfig
from ..registry import ProtocolInfo, register
from .client import AdditiveClient
from .params import read_params
from .primitives import new_ed25519, public_bytes
from .server import AdditiveServer

__all__ = ["AdditiveClient", "AdditiveServer", "INFO", "enroll"]


def enroll(config: SessionConfig, rng: RandomSource) -> tuple[SessionConfig, dict[ClientId, bytes]]:
    """Give every client an Ed25519 identity; publish the public keys in the config's options.

    Validates the options first, so a bad --threshold or --neighbors fails before any key exists.
    """
    read_params(config, need_identities=False)
    private: dict[ClientId, bytes] = {}
    public: dict[ClientId, bytes] = {}
    for client in sorted(config.roster):
        key = new_ed25519(rng.child(f"identity-{client}"))
        private[client] = key.private_bytes_raw()
        public[client] = public_bytes(key)
    options = dict(config.options)
    options["identity_public_keys"] = public
    return SessionConfig(config.session_id, config.roster, options), private


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
        # every client refuses to sign or unmask a survivor list shorter than this
        cohort_option="min_contributors",
        input_rounds=("masked-input",),  # a client stopping mid-stream aborts the session
    )
)
