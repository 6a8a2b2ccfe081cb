"""What the recorded server view holds for one client is independent of that client's mask."""

from __future__ import annotations

import numpy as np
import pytest

from fedprllm_secure.errors import ProtocolError
from fedprllm_secure.randomness import SeededRandomSource
from fedprllm_secure.secure_sum.additive import primitives as P
from fedprllm_secure.secure_sum.additive.layout import WordLayout
from fedprllm_secure.secure_sum.additive.messages import MaskedInput, ShareKeys, UnmaskShares
from fedprllm_secure.secure_sum.additive.shamir import combine, split
from fedprllm_secure.secure_sum.api import AggregateResult, AggregationSpec, config_digest
from fedprllm_secure.secure_sum.messages import decode
from fedprllm_secure.secure_sum.packing import bits_for, unpack_uint
from fedprllm_secure.secure_sum.session import SimulatedSession
from tests.tools.additive_harness import build, deliver, run

stats = pytest.importorskip("scipy.stats")

N = 4
LENGTH = 40_000
TARGET = 0


def mask_bits(seed: int) -> np.ndarray:
    rng = SeededRandomSource(f"mask-{seed}")
    return np.frombuffer(rng.random_bytes(LENGTH), dtype=np.uint8) & 1


def server_view(protocol: str, target_input: np.ndarray, seed: str = "leak", drop_at=None):
    inputs = {c: (lambda i, ch, c=c: mask_bits(c)) for c in range(N)}
    inputs[TARGET] = lambda i, ch: target_input
    session = SimulatedSession(
        protocol, inputs, SeededRandomSource(seed), record_payloads=True, drop_at=drop_at
    )
    session.aggregate(AggregationSpec.from_lengths(0, {"layer": LENGTH}, 1))
    return [r for r in session.bus.log.received if r.sender == TARGET]


LAYOUT = WordLayout.for_max_sum(N)  # radix 5, 27 entries per 64-bit word


def received_words(view) -> np.ndarray:
    """The masked words the server received from the target (additive)."""
    (payload,) = [r.payload for r in view if r.tag == "additive/masked-input"]
    return unpack_uint(decode(payload).data, LAYOUT.bits, LAYOUT.words(LENGTH))


def received_plaintext(view) -> np.ndarray:
    (payload,) = [r.payload for r in view if r.tag == "plaintext/submission"]
    return unpack_uint(decode(payload).data, bits_for(1), LENGTH).astype(np.int64)


def contingency_p(x: np.ndarray, y: np.ndarray, levels: int) -> float:
    table = np.zeros((2, levels), dtype=np.int64)
    np.add.at(table, (x, y), 1)
    return float(stats.chi2_contingency(table)[1])


def test_masked_input_is_independent_of_the_mask_and_uniform():
    """Word j carries entry j as its lowest digit: its low and high bits are uniform and
    independent of that entry."""
    x = mask_bits(100)
    words = received_words(server_view("additive", x))
    digit0 = x[: words.size].astype(np.int64)  # striped layout: entry j is digit 0 of word j
    for part in (words & np.uint64(15), words >> np.uint64(60)):
        y = part.astype(np.int64)
        assert contingency_p(digit0, y, 16) > 1e-3
        assert stats.chisquare(np.bincount(y, minlength=16)).pvalue > 1e-3
        assert abs(np.corrcoef(digit0, y)[0, 1]) < 0.1


def test_the_same_test_detects_the_plaintext_protocol():
    """Control: the test has power (the insecure reference leaks the mask outright)."""
    x = mask_bits(100)
    y = received_plaintext(server_view("plaintext", x))
    assert contingency_p(x.astype(np.int64), y, 2) < 1e-10


@pytest.mark.parametrize("drop_at", [None, {2: "masked-input"}])
def test_everything_but_the_masked_vector_is_identical_for_any_mask(drop_at):
    """Keys, shares, signatures, sizes: byte-identical whether the mask is all zeros or all ones."""
    zeros = server_view("additive", np.zeros(LENGTH, dtype=np.uint8), drop_at=drop_at)
    ones = server_view("additive", np.ones(LENGTH, dtype=np.uint8), drop_at=drop_at)
    assert [(r.tag, r.nbytes) for r in zeros] == [(r.tag, r.nbytes) for r in ones]
    for a, b in zip(zeros, ones, strict=True):
        if not a.tag.endswith("masked-input"):
            assert a.payload == b.payload
    # and the masked words themselves: y1 - y0 = pack(x1) - pack(x0) (same masks), so only the
    # randomness of the masks hides x; the uniformity test above covers that
    diff = received_words(ones) - received_words(zeros)  # wraps mod 2^64
    assert np.array_equal(diff, LAYOUT.pack(np.ones(LENGTH, dtype=np.uint8)))


def test_fewer_than_t_shares_are_independent_of_the_secret():
    """What t - 1 colluding holders see of a client's secret does not depend on the secret."""
    rng = SeededRandomSource("shares")
    table = np.zeros((2, 16), dtype=np.int64)
    for trial in range(1500):
        secret = bytes(32) if trial % 2 == 0 else b"\xff" * 32
        shares = split(secret, 3, [1, 2, 3, 4], rng)
        for x in (2, 4):  # a coalition of t - 1 = 2 holders
            table[trial % 2, shares[x][-1] & 15] += 1
        with pytest.raises(ProtocolError, match="cannot recover"):
            combine({x: shares[x] for x in (2, 4)}, 3)
    assert stats.chi2_contingency(table)[1] > 1e-3


def test_a_later_dropout_does_not_unmask_earlier_aggregations():
    """Client 3 survives aggregation 0 and drops in aggregation 1, so its aggregation-1 mask key is
    reconstructed. Were that key reused from aggregation 0, the server could strip the pairwise masks
    0-3, 1-3 and 2-3 of aggregation 0 and learn x_3 of aggregation 0 from the sum. Mask keys are
    fresh per aggregation, so the same computation yields garbage; with the true aggregation-0 key
    it would succeed (control)."""
    n, victim, t = 4, 3, 3
    others = tuple(c for c in range(n) if c != victim)
    length, layout = 2000, WordLayout.for_max_sum(n)
    words = layout.words(length)
    x = {c: mask_bits(200 + c)[:length] for c in range(n)}
    inputs = {c: (lambda i, ch, c=c: x[c]) for c in range(n)}
    session = build(tuple(range(n)), inputs, SeededRandomSource("later"), {"threshold": t}, True)
    out = session.server.begin(AggregationSpec.from_lengths(0, {"layer": length}, 1))
    true_key = None  # aggregation-0 mask key of the victim, only for the control
    while not isinstance(out, AggregateResult):
        out = session.server.handle(deliver(session, out))
        true_key = true_key or session.clients[victim].mask_key
    first = out
    gone: set[int] = set()
    ups = [(c, decode(w)) for d, c, w in session.transcript if d == "up"]
    mask_pub0 = {m.sender: m.mask_key.mask_public for _, m in ups if isinstance(m, ShareKeys)}
    y0 = {
        m.sender: unpack_uint(m.data, layout.bits, words)
        for _, m in ups
        if isinstance(m, MaskedInput)
    }
    b0 = {}
    for owner in range(n):
        shares = {
            c + 1: s.value
            for c, m in ups
            if isinstance(m, UnmaskShares)
            for s in m.self_mask_shares
            if s.owner == owner
        }
        b0[owner] = combine(shares, t)
    run(
        session,
        AggregationSpec.from_lengths(1, {"layer": length}, 1),
        drop_at={victim: "masked-input"},
        gone=gone,
    )
    later = [decode(w) for d, c, w in session.transcript if d == "up"][len(ups) :]
    key_shares = {
        m.sender + 1: s.value
        for m in later
        if isinstance(m, UnmaskShares)
        for s in m.key_shares
        if s.owner == victim
    }
    revealed = P.X25519PrivateKey.from_private_bytes(combine(key_shares, t))
    binding = config_digest(session.config)  # the HKDF salt (protocols/additive.md 3.1)

    def attack(key) -> np.ndarray:
        """The packed words of the victim's aggregation-0 input as a server holding `key` would
        compute them (uint64 arithmetic wraps mod 2^64 = 2^b)."""
        rest = np.zeros(words, dtype=np.uint64)
        for u in others:
            seed = P.derive_key(P.agree(key, mask_pub0[u]), binding, b"mask-seed", u, victim)
            pair = P.keystream_words(seed, 0, 0, words, layout.bits)
            own = P.keystream_words(b0[u], 0, 0, words, layout.bits)
            # the sum of the others = their y - b-masks - (their masks with the victim); the
            # masks among the others cancel; u < victim, so u added its mask with the victim
            rest += y0[u] - own - pair
        return layout.pack(first.sums["layer"]) - rest

    packed = layout.pack(x[victim])
    assert np.array_equal(attack(true_key), packed)  # control: the attack is real
    assert np.mean(attack(revealed) == packed) < 0.05
