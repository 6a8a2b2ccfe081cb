"""Automatic parameter choice: the HE context and how many counts share one slot.

Contract: `he_params(scheme)` is fixed per scheme (N = 8192, 128-bit security by the
HomomorphicEncryption.org table: 160 <= 218 coefficient-modulus bits). `choose_packing(he, clients,
bound)` returns the base B = clients * bound + 1 (> every possible sum of one entry) and the largest
number K of base-B digits per slot for which decryption is exact:

- BFV: arithmetic is exact modulo the plain modulus t, so K is the largest k with B**k <= t; the
  one-time pad is uniform modulo t (M = t).
- CKKS: every slot carries a one-time pad modulo M = 2**K' (the smallest power of two above
  B**K - 1; packing.py), so a client encrypts an integer in [0, M), centred to [-M/2, M/2), and a
  sum of `clients` of them lies in [-V, V] with V = clients * M / 2. A decrypted slot carries an
  absolute error; the budget `FP_FACTOR * 2**-53 * V + clients * NOISE_PER_CLIENT / scale` must
  stay <= ROUNDING_LIMIT (< 0.5, so rounding to the nearest integer is exact). FP_FACTOR is twice the worst factor measured
  over random and structured inputs (10, see protocols/ckks.md); the noise term is negligible at
  scale 2**40.

Everything here is pure and deterministic; protocols/vectors/ckks/params.json pins its outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from ...errors import ConfigError

POLY_MODULUS_DEGREE = 8192
COEFF_MOD_BIT_SIZES = (60, 40, 60)  # the last prime is SEAL's special prime; data level = 100 bits
CKKS_SCALE_BITS = 40
# Double-precision error of CKKS encode + decode, in units of 2**-53 * max|slot|. The worst
# measured factor is 10 (N = 8192; slots alternating between +V and -V, which correlated client
# masks produce); we budget twice that.
FP_FACTOR = 20.0
# Fresh CKKS encryption noise per ciphertext, in units of 1/scale, budgeted far above the measured
# ~2**8 so that the term stays an upper bound when `clients` ciphertexts are summed.
NOISE_PER_CLIENT = 2.0**16
ROUNDING_LIMIT = 0.45  # the error budget; strictly below 0.5 so nearest-integer rounding is exact
BFV_PLAIN_MODULUS_BITS = 58  # < 60: t must differ from (be coprime to) the 60-bit ciphertext primes
# BFV decrypts correctly while q / t exceeds the summed noise; we require this many bits of
# headroom beyond log2(clients).
BFV_NOISE_HEADROOM_BITS = 20
SCHEMES = ("ckks", "bfv")


@dataclass(frozen=True)
class HEParams:
    """One TenSEAL context's parameters. `slots` values fit in one ciphertext."""

    scheme: str
    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int  # CKKS only (0 for BFV)
    plain_modulus: int  # BFV only (0 for CKKS)

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2 if self.scheme == "ckks" else self.poly_modulus_degree

    @property
    def data_bits(self) -> int:
        """Bits of the modulus a fresh ciphertext lives under (all primes but the special one)."""
        return sum(self.coeff_mod_bit_sizes[:-1])


@dataclass(frozen=True)
class Packing:
    """K = `per_slot` base-`base` digits per slot; `centered` for CKKS (see packing.py).

    `error_bound` is the CKKS error budget actually used by this packing (0 for BFV); the
    authority refuses any decryption that strays further from an integer. `pad_modulus` is the
    modulus M of the one-time pads every slot carries: 2**K' for CKKS, the plain modulus t for
    BFV.
    """

    base: int
    per_slot: int
    centered: bool
    error_bound: float
    pad_modulus: int

    @property
    def max_packed(self) -> int:
        return int(self.base**self.per_slot - 1)


def _is_prime(n: int) -> bool:
    """Deterministic Miller-Rabin for n < 3.3e24 (the first 13 primes as witnesses)."""
    if n < 2:
        return False
    witnesses = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41)
    for p in witnesses:
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for a in witnesses:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def batching_prime(bits: int, poly_modulus_degree: int) -> int:
    """The largest prime p < 2**bits with p = 1 mod 2N (BFV batching needs it)."""
    step = 2 * poly_modulus_degree
    k = (2**bits - 2) // step
    while k > 0:
        candidate = k * step + 1
        if _is_prime(candidate):
            return candidate
        k -= 1
    raise ConfigError(f"no batching prime below 2**{bits}")


@cache
def he_params(scheme: str) -> HEParams:
    """The fixed context parameters of `scheme` ("ckks" or "bfv")."""
    if scheme == "ckks":
        return HEParams("ckks", POLY_MODULUS_DEGREE, COEFF_MOD_BIT_SIZES, CKKS_SCALE_BITS, 0)
    if scheme == "bfv":
        t = batching_prime(BFV_PLAIN_MODULUS_BITS, POLY_MODULUS_DEGREE)
        return HEParams("bfv", POLY_MODULUS_DEGREE, COEFF_MOD_BIT_SIZES, 0, t)
    raise ConfigError(f"unknown he_scheme {scheme!r} (choose one of {', '.join(SCHEMES)})")


def ckks_error_bound(he: HEParams, clients: int, max_abs_slot: float) -> float:
    """Upper bound on |decrypted slot - true slot| after summing `clients` fresh ciphertexts."""
    return FP_FACTOR * 2.0**-53 * max_abs_slot + clients * NOISE_PER_CLIENT / 2.0**he.scale_bits


def choose_packing(
    he: HEParams, clients: int, bound: int, max_per_slot: int | None = None
) -> Packing:
    """The densest exact packing for sums of `clients` vectors with entries in [0, bound].

    `max_per_slot` caps K (1 gives the one-count-per-slot baseline). Raises ConfigError when not
    even one count per slot is exact.
    """
    if clients < 1 or bound < 1:
        raise ConfigError("packing needs at least one client and a bound of at least 1")
    if max_per_slot is not None and max_per_slot < 1:
        raise ConfigError("max_per_slot must be at least 1")
    base = clients * bound + 1
    cap = max_per_slot if max_per_slot is not None else 64
    best: Packing | None = None
    for k in range(1, cap + 1):
        packing = _packing_if_exact(he, clients, base, k)
        if packing is None:
            break
        best = packing
    if best is None:
        raise ConfigError(
            f"{he.scheme} cannot sum {clients} clients with bound {bound} exactly "
            "(the sum does not fit one slot)"
        )
    return best


def _packing_if_exact(he: HEParams, clients: int, base: int, k: int) -> Packing | None:
    max_packed = base**k - 1
    if he.scheme == "bfv":
        headroom = he.data_bits - he.plain_modulus.bit_length()
        if headroom < clients.bit_length() + BFV_NOISE_HEADROOM_BITS:
            return None
        if max_packed >= he.plain_modulus:
            return None
        return Packing(base, k, False, 0.0, he.plain_modulus)
    modulus = ckks_pad_modulus(max_packed)
    half = clients * modulus / 2  # the largest |centred sum| of `clients` padded slots
    # The centred value times the scale must stay far below the data modulus (sign + margin).
    if half * 2.0**he.scale_bits >= 2.0 ** (he.data_bits - 2):
        return None
    error = ckks_error_bound(he, clients, half)
    return Packing(base, k, True, error, modulus) if error <= ROUNDING_LIMIT else None


def ckks_pad_modulus(max_packed: int) -> int:
    """M = 2**K', the smallest power of two above every packed value (M > max_packed >= 1)."""
    return 1 << max(1, int(max_packed).bit_length())
