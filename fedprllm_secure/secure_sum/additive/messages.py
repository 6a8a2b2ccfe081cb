"""Wire messages of `additive` (tags "additive/...", codec in secure_sum/messages.py).

Every message names the session and, from share-keys on, the aggregation index; client replies
name their sender. Field meanings are normative in protocols/additive.md, section "Messages".
"""

from __future__ import annotations

from dataclasses import dataclass

from ..api import AggregationSpec
from ..messages import message

ADVERTISE = "advertise-keys"
SHARE = "share-keys"
MASKED = "masked-input"
CONSISTENCY = "consistency-check"
UNMASK = "unmasking"
ROUNDS = (ADVERTISE, SHARE, MASKED, CONSISTENCY, UNMASK)


@dataclass(frozen=True)
class SignedKeys:
    """A client's session key (X25519, encrypts shares) and its Ed25519 signature over it."""

    owner: int
    cipher_public: bytes
    signature: bytes


@dataclass(frozen=True)
class SignedMaskKey:
    """A client's mask-agreement key (X25519) for one aggregation, signed with its identity."""

    owner: int
    mask_public: bytes
    signature: bytes


@dataclass(frozen=True)
class Sealed:
    """An AES-GCM ciphertext between two clients, relayed by the server."""

    sender: int
    recipient: int
    ciphertext: bytes


@dataclass(frozen=True)
class Share:
    """A plaintext Shamir share of `owner`'s secret, revealed in the unmasking round."""

    owner: int
    value: bytes


@dataclass(frozen=True)
class Signature:
    signer: int
    signature: bytes


@dataclass(frozen=True)
class SignedView:
    """The neighbours `owner` masked with in one aggregation (N(owner) ∩ U2_owner), signed."""

    owner: int
    view: tuple[int, ...]
    signature: bytes


@message("additive/advertise-request", ADVERTISE)
@dataclass(frozen=True)
class AdvertiseRequest:
    session_id: bytes
    aggregation: int
    graph_seed: bytes


@message("additive/advertise-keys", ADVERTISE)
@dataclass(frozen=True)
class AdvertiseKeys:
    session_id: bytes
    keys: SignedKeys


@message("additive/share-keys-request", SHARE)
@dataclass(frozen=True)
class ShareKeysRequest:
    session_id: bytes
    aggregation: int
    spec: AggregationSpec
    keys: tuple[SignedKeys, ...]  # the recipient's live holders, itself included


@message("additive/share-keys", SHARE)
@dataclass(frozen=True)
class ShareKeys:
    session_id: bytes
    aggregation: int
    sender: int
    mask_key: SignedMaskKey  # fresh every aggregation
    commitment: bytes  # SHA-256 commitment to the self-mask seed of this aggregation
    sealed: tuple[Sealed, ...]


@message("additive/masked-input-request", MASKED)
@dataclass(frozen=True)
class MaskedInputRequest:
    session_id: bytes
    aggregation: int
    chunk_index: int
    mask_keys: tuple[SignedMaskKey, ...]  # of the senders below; only with chunk_index 0
    sealed: tuple[Sealed, ...]  # shares addressed to the recipient; only with chunk_index 0


@message("additive/masked-input", MASKED)
@dataclass(frozen=True)
class MaskedInput:
    session_id: bytes
    aggregation: int
    sender: int
    chunk_index: int
    data: bytes  # the masked chunk, bit-packed to b bits per entry
    view: tuple[SignedView, ...]  # the sender's signed masking view: one with chunk 0, else none


@message("additive/consistency-request", CONSISTENCY)
@dataclass(frozen=True)
class ConsistencyRequest:
    session_id: bytes
    aggregation: int
    survivors: tuple[int, ...]


@message("additive/consistency-signature", CONSISTENCY)
@dataclass(frozen=True)
class ConsistencySignature:
    session_id: bytes
    aggregation: int
    signature: Signature


@message("additive/unmask-request", UNMASK)
@dataclass(frozen=True)
class UnmaskRequest:
    session_id: bytes
    aggregation: int
    survivors: tuple[int, ...]
    dead: tuple[int, ...]
    signatures: tuple[Signature, ...]  # at least the quorum, over `survivors`
    views: tuple[SignedView, ...]  # of the recipient's neighbours among the survivors


@message("additive/unmask-shares", UNMASK)
@dataclass(frozen=True)
class UnmaskShares:
    session_id: bytes
    aggregation: int
    sender: int
    self_mask_shares: tuple[Share, ...]  # for survivors
    key_shares: tuple[Share, ...]  # mask secret keys of dead clients


SERVER_MESSAGES = (
    AdvertiseRequest,
    ShareKeysRequest,
    MaskedInputRequest,
    ConsistencyRequest,
    UnmaskRequest,
)
CLIENT_MESSAGES = (AdvertiseKeys, ShareKeys, MaskedInput, ConsistencySignature, UnmaskShares)
