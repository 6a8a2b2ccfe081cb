"""Word layout of `additive`: how a chunk's entries become the words that are masked.

Normative text: protocols/additive.md, section 2 ("Words"). Sums of up to n inputs in [0, B] lie in
[0, M] with M = B * n, so they are digits of radix R = M + 1. A layout puts E entries in one word
of b bits as the radix-R number sum_q x_q * R^q < R^E <= 2^b. Adding words adds the digits without
a carry (a digit sum never exceeds M), so masking words mod 2^b sums the entries exactly.

Two layouts, the one with fewer bits per entry wins (a tie goes to the packed one):
- one entry per word, b = bit_length(M) (the plain modular layout);
- E = the largest e with R^e <= 2^64 entries per 64-bit word (e.g. 20 per word at n = 8, B = 1:
  3.2 bits per entry instead of 4).

Striped order: a chunk of L entries has W = ceil(L / E) words; entry q * W + j is digit q of word j
(entries past L are zero digits). Each digit row is then one contiguous slice, so packing and
unpacking are E whole-array passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import ProtocolError
from .primitives import word_dtype

WORD_BITS = 64


@dataclass(frozen=True)
class WordLayout:
    radix: int  # M + 1: every digit, and every digit of a sum, is below it
    per_word: int  # E, entries per word
    bits: int  # b, words are masked mod 2^b

    @classmethod
    def for_max_sum(cls, max_sum: int) -> WordLayout:
        """The layout for sums in [0, max_sum]; ProtocolError if they do not fit in 64 bits."""
        if max_sum < 1:
            raise ProtocolError("the largest possible sum must be at least 1")
        plain_bits = int(max_sum).bit_length()
        if plain_bits > WORD_BITS:
            raise ProtocolError(f"sums up to {max_sum} do not fit in {WORD_BITS} bits")
        radix = max_sum + 1
        per_word = 0
        while radix ** (per_word + 1) <= 2**WORD_BITS:
            per_word += 1
        # fewer bits per entry wins: WORD_BITS / per_word <= plain_bits / 1 (ties -> packed)
        if per_word > 1 and WORD_BITS <= plain_bits * per_word:
            return cls(radix, per_word, WORD_BITS)
        return cls(radix, 1, plain_bits)

    @property
    def dtype(self) -> np.dtype:
        """The smallest unsigned little-endian dtype holding b bits (the keystream word)."""
        return word_dtype(self.bits)

    @property
    def word_mask(self) -> np.ndarray:
        """2^b - 1 in the word dtype (for `&=` after wrapping arithmetic)."""
        return np.array((1 << self.bits) - 1, dtype=self.dtype)

    def words(self, length: int) -> int:
        """W = ceil(length / E): words in a chunk of `length` entries."""
        return -(-length // self.per_word)

    def pack(self, entries: np.ndarray) -> np.ndarray:
        """Entries in [0, M] (any unsigned/int dtype) -> W words in the word dtype."""
        length = entries.size
        if self.per_word == 1:
            return entries.reshape(-1).astype(self.dtype)
        count = self.words(length)
        # unsigned digits only: uint64 + int64 would go through float64 and lose low bits
        kind = entries.dtype if entries.dtype.kind == "u" else np.dtype(np.uint64)
        padded = np.zeros(count * self.per_word, dtype=kind)
        padded[:length] = entries.reshape(-1)
        rows = padded.reshape(self.per_word, count)
        radix = np.uint64(self.radix)
        words = rows[-1].astype(np.uint64)
        for q in range(self.per_word - 2, -1, -1):
            words *= radix
            np.add(words, rows[q], out=words, casting="unsafe")
        return words

    def unpack(self, words: np.ndarray, length: int) -> np.ndarray:
        """W words (already reduced mod 2^b) -> `length` entries as uint64.

        ProtocolError if a word is not a valid radix-R number of E digits or a padding digit is
        not zero: neither can come from honest inputs, so some participant cheated.
        """
        if words.size != self.words(length):
            raise ProtocolError(f"expected {self.words(length)} words, got {words.size}")
        rest = words.astype(np.uint64)
        if self.per_word == 1:
            return rest
        radix = np.uint64(self.radix)
        digits = np.empty((self.per_word, words.size), dtype=np.uint64)
        for q in range(self.per_word):
            quotient = rest // radix
            np.subtract(rest, quotient * radix, out=digits[q])
            rest = quotient
        flat = digits.reshape(-1)
        if rest.any() or flat[length:].any():
            raise ProtocolError("a summed word is not a valid packed vector: a participant cheated")
        return flat[:length]

    def unpack_to(
        self, words: np.ndarray, length: int, dtype: np.dtype, slice_words: int = 1 << 16
    ) -> np.ndarray:
        """`unpack(words, length).astype(dtype)` holding at most `slice_words` words' digits in
        uint64 at a time: the server's transient memory is O(slice), not 8 B per chunk entry.

        `dtype` must hold every value below 2^b / radix (the sum dtype of the layout's M does).
        Same checks, same ProtocolError as `unpack`.
        """
        if words.size != self.words(length):
            raise ProtocolError(f"expected {self.words(length)} words, got {words.size}")
        count = words.size
        out = np.empty(self.per_word * count, dtype=dtype)
        rows = out.reshape(self.per_word, count)
        for start in range(0, count, slice_words):
            piece = words[start : start + slice_words]
            digits = self.unpack(piece, piece.size * self.per_word)
            rows[:, start : start + piece.size] = digits.reshape(self.per_word, piece.size)
        if out[length:].any():
            raise ProtocolError("a summed word is not a valid packed vector: a participant cheated")
        return out[:length]
