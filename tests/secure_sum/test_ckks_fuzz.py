"""Structure-aware fuzzing of every party that parses ckks messages (issue 12, item 9).

Hypothesis builds messages field by field (huge and negative integers, 2^50-entry chunks, foreign
senders, missing/extra/garbage ciphertexts and signatures, other sessions), and also mutates the
wire bytes of honest messages. Whatever arrives, the key authority, the server and a client
answer or refuse with the project's error (ProtocolError, of which MessageDecodeError is one):
never MemoryError, an assertion, or a library exception. Examples are few and vectors tiny
(TenSEAL is slow); the cases that matter most are pinned with @example.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fedprllm_secure.errors import ProtocolError
from fedprllm_secure.randomness import SeededRandomSource
from fedprllm_secure.secure_sum.api import AggregationSpec, ChunkSpec, SessionConfig, config_digest
from fedprllm_secure.secure_sum.ckks import context as he_ctx
from fedprllm_secure.secure_sum.ckks import identity as ident
from fedprllm_secure.secure_sum.ckks.authority import (
    AuthorityLink,
    KeyAuthority,
    statement_of,
    upload_payload,
)
from fedprllm_secure.secure_sum.ckks.messages import (
    DecryptReply,
    DecryptRequest,
    EncryptedChunk,
    Statement,
)
from fedprllm_secure.secure_sum.ckks.params import he_params
from fedprllm_secure.secure_sum.ckks.settings import PUBLIC_CONTEXT
from fedprllm_secure.secure_sum.messages import decode, encode
from fedprllm_secure.secure_sum.registry import get

ROSTER = (0, 1, 2)
LENGTH = 40
FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


def provider(client: int):
    data = {"w": np.random.default_rng(client).integers(0, 2, LENGTH).astype(np.uint8)}

    def read(index: int, chunk: ChunkSpec) -> np.ndarray:
        if chunk.name not in data:
            raise ProtocolError(f"unknown chunk {chunk.name!r}")
        return data[chunk.name]

    return read


@functools.cache
def honest():
    """One enrolled session and an honest, signed decryption request for chunk 'w'."""
    info = get("ckks")
    rng = SeededRandomSource("ckks-fuzz")
    # The designated authority (client 0) holds the secret context in its identity bytes.
    draft = SessionConfig(rng.random_bytes(32), ROSTER, {"authority": 0})
    config, identities = info.enroll(draft, rng.child("enroll"))
    server = info.make_server(config, rng.child("server"))
    spec = AggregationSpec.from_lengths(0, {"w": LENGTH}, 1)
    requests = server.begin(spec)
    clients = {c: new_client(config, identities, c) for c in ROSTER}
    uploads = tuple(clients[c].handle(requests[c]) for c in ROSTER)
    public = he_ctx.load_context(config.options[PUBLIC_CONTEXT], private=False)
    he = he_params("ckks")
    size = -(-LENGTH // requests[0].per_slot)
    total = None
    for upload in uploads:
        total = he_ctx.add_into(
            total, he_ctx.load_ciphertext(public, he, upload.ciphertexts[0], size)
        )
    request = DecryptRequest(
        session_id=config.session_id,
        aggregation=0,
        bound=1,
        chunk=spec.chunks[0],
        base=requests[0].base,
        per_slot=requests[0].per_slot,
        ciphertexts=(he_ctx.serialize(total),),
        statements=tuple(statement_of(u) for u in uploads),
    )
    return config, identities, requests[0], uploads, request


def new_client(config, identities, c: int):
    return get("ckks").make_client(config, c, SeededRandomSource(c), provider(c), identities[c])


def fresh_authority() -> AuthorityLink:
    """A new key authority for the honest session (nothing decrypted yet), behind a link."""
    config, identities = honest()[:2]
    parsed = ident.decode_identity(identities[0])
    assert parsed.secret_context is not None and parsed.pad_key is not None
    return AuthorityLink(KeyAuthority(config, parsed.secret_context, parsed.pad_key))


def only_project_errors(call) -> None:
    try:
        call()
    except ProtocolError:
        pass


# -- strategies ---------------------------------------------------------------------------------

INTS = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, 2, 3, 7, 24, 2**31, 2**32, 2**32 + 1, 2**50, 2**63, 2**64, -1]),
)
SIZES = st.one_of(st.integers(0, 100), st.sampled_from([2**32, 2**50, 2**63, 2**64 + 5]))
NAMES = st.one_of(
    st.sampled_from(["w", "", "w\x00", "other"]),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),
)
BLOBS = st.one_of(st.binary(max_size=48), st.sampled_from([b"", bytes(64), b"\xff" * 64]))


@st.composite
def chunks(draw) -> ChunkSpec:
    return ChunkSpec(draw(NAMES), draw(SIZES), draw(SIZES))


@st.composite
def uploads(draw) -> EncryptedChunk:
    genuine = draw(st.sampled_from(honest()[3]))
    field = draw(st.sampled_from(["none", "session_id", "aggregation", "sender", "chunk_name",
                                  "ciphertexts", "pad_public", "signature"]))  # fmt: skip
    values = {
        "session_id": BLOBS,
        "aggregation": INTS,
        "sender": st.one_of(INTS, st.sampled_from(ROSTER)),
        "chunk_name": NAMES,
        "ciphertexts": st.lists(BLOBS, max_size=3).map(tuple),
        "pad_public": st.one_of(BLOBS, st.sampled_from([bytes(32), b"\x01" + bytes(31)])),
        "signature": BLOBS,
    }
    if field == "none":
        return genuine
    return dataclasses.replace(genuine, **{field: draw(values[field])})


@st.composite
def statements(draw) -> Statement:
    genuine = statement_of(draw(st.sampled_from(honest()[3])))
    field = draw(st.sampled_from(["none", "sender", "pad_public", "digest", "signature"]))
    values = {
        "sender": st.one_of(INTS, st.sampled_from(ROSTER)),
        # includes low-order X25519 points (all zero, one), which the agreement refuses
        "pad_public": st.one_of(BLOBS, st.sampled_from([bytes(32), b"\x01" + bytes(31)])),
        "digest": BLOBS,
        "signature": BLOBS,
    }
    if field == "none":
        return genuine
    return dataclasses.replace(genuine, **{field: draw(values[field])})


@st.composite
def decrypt_requests(draw) -> DecryptRequest:
    request = honest()[4]
    changes = draw(
        st.lists(
            st.sampled_from(
                [
                    "session_id",
                    "aggregation",
                    "bound",
                    "chunk",
                    "base",
                    "per_slot",
                    "ciphertexts",
                    "statements",
                ]
            ),  # fmt: skip
            max_size=3,
            unique=True,
        )
    )
    values = {
        "session_id": BLOBS,
        "aggregation": INTS,
        "bound": INTS,
        "chunk": chunks(),
        "base": INTS,
        "per_slot": INTS,
        "ciphertexts": st.lists(BLOBS, max_size=3).map(tuple),
        "statements": st.lists(statements(), max_size=5).map(tuple),
    }
    return dataclasses.replace(request, **{name: draw(values[name]) for name in changes})


def mutate(wire: bytes, data: st.DataObject) -> bytes:
    buf = bytearray(wire)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.integers(0, 3))
        i = data.draw(st.integers(0, max(len(buf) - 1, 0)))
        if op == 0 and buf:
            buf[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == 1:
            buf[i : i + 4] = data.draw(
                st.sampled_from([b"\xff" * 4, b"\x00" * 4, b"\x00\x04\x00\x00"])
            )
        elif op == 2:
            del buf[i:]
        else:
            buf[i:i] = data.draw(st.binary(min_size=1, max_size=8))
    return bytes(buf)


# -- the key authority --------------------------------------------------------------------------

HUGE = ChunkSpec("w", 2**50, 0)


@FUZZ
@given(decrypt_requests())
@example(dataclasses.replace(honest()[4], chunk=HUGE, ciphertexts=(), statements=()))
@example(dataclasses.replace(honest()[4], chunk=HUGE))
@example(dataclasses.replace(honest()[4], per_slot=2**64, base=2**64))
@example(dataclasses.replace(honest()[4], aggregation=2**40))
def test_the_key_authority_refuses_any_malformed_request_with_a_project_error(request) -> None:
    link = fresh_authority()
    only_project_errors(lambda: link.request(request))


def test_the_134_byte_request_of_the_issue_is_refused() -> None:
    """The DecryptRequest of issue 12 item 9: a ChunkSpec of 2^50 entries and no ciphertexts."""
    request = dataclasses.replace(honest()[4], chunk=HUGE, ciphertexts=(), statements=())
    wire = encode(request)
    assert len(wire) < 200
    link = fresh_authority()
    try:
        link.request(decode(wire, DecryptRequest))
    except ProtocolError as exc:
        assert "minimum" in str(exc)
    else:
        raise AssertionError("the authority answered a request without statements")


@FUZZ
@given(st.data())
def test_mutated_request_bytes_reach_the_authority_only_as_project_errors(data) -> None:
    wire = mutate(encode(honest()[4]), data)
    link = fresh_authority()

    def call() -> None:
        link.request(decode(wire, DecryptRequest))

    only_project_errors(call)


# -- the server ---------------------------------------------------------------------------------


@FUZZ
@given(uploads(), st.booleans())
def test_the_server_refuses_any_malformed_upload_with_a_project_error(upload, resign) -> None:
    config, identities, _request, genuine, _ = honest()
    if resign and upload.sender in ROSTER:  # a lying client signs whatever it sends
        upload = signed_by_sender(config, identities, upload)
    server = get("ckks").make_server(config, SeededRandomSource(5))
    server.begin(AggregationSpec.from_lengths(0, {"w": LENGTH}, 1))
    replies = {c: genuine[c] for c in ROSTER}
    replies[upload.sender if upload.sender in ROSTER else 0] = upload
    only_project_errors(lambda: server.handle(replies))


def signed_by_sender(config, identities, upload: EncryptedChunk) -> EncryptedChunk:
    """`upload` signed by its sender's real key (unchanged if its fields cannot be signed)."""
    request = honest()[2]
    try:
        payload = upload_payload(
            config_digest(config),
            upload,
            ChunkSpec("w", LENGTH, 0),
            1,
            request.base,
            request.per_slot,
        )
    except ProtocolError:
        return upload
    key = ident.decode_identity(identities[upload.sender]).signing_key
    return dataclasses.replace(upload, signature=ident.sign(key, payload))


# -- a client -----------------------------------------------------------------------------------


@FUZZ
@given(st.data())
def test_a_client_refuses_any_malformed_request_with_a_project_error(data) -> None:
    config, identities, request, _uploads, decrypt = honest()
    field = data.draw(st.sampled_from(["session_id", "aggregation", "bound", "chunk", "base",
                                       "per_slot", "decrypt", "reply"]))  # fmt: skip
    if field == "decrypt":
        message: object = data.draw(decrypt_requests())
    elif field == "reply":
        message = DecryptReply(config.session_id, 0, "w", data.draw(BLOBS))
    else:
        values = {"session_id": BLOBS, "aggregation": INTS, "bound": INTS, "chunk": chunks(),
                  "base": INTS, "per_slot": INTS}  # fmt: skip
        message = dataclasses.replace(request, **{field: data.draw(values[field])})
    client = new_client(config, identities, 1)
    only_project_errors(lambda: client.handle(message))


@FUZZ
@given(st.data())
def test_mutated_request_bytes_reach_a_client_only_as_project_errors(data) -> None:
    config, identities, request, _uploads, _ = honest()
    wire = mutate(encode(request), data)
    client = new_client(config, identities, 2)
    only_project_errors(lambda: client.handle(decode(wire)))


# -- identities ---------------------------------------------------------------------------------


@FUZZ
@given(st.data())
def test_identity_bytes_are_length_checked(data) -> None:
    identities = honest()[1]
    wire = mutate(identities[0], data)
    try:
        parsed = ident.decode_identity(wire)
    except ProtocolError:
        return
    assert len(parsed.signing_key) == 32
    authority = len(parsed.secret_context or b"") + len(parsed.pad_key or b"")
    assert len(wire) == 41 + authority
