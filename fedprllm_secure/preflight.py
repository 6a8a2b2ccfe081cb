"""Checks of a run that need no model, done before it loads (seconds, not minutes).

`check_run(config)` (called by `pipeline.run` and so by `simulate`) and `check_audit(config)`
(by `audit`) raise one line for: a model that cannot be reached (a Hub id neither cached nor
reachable), protocol options the protocol does not take or that no session over the real client
count could run with (threshold, minimum cohort), dropouts naming clients that do not exist, and
client or evaluation text that is unreadable, binary or too short. Text length: with a tokenizer
that loads in a moment (`model.cheap_tokenizer`) the exact token count; else the UTF-8 byte count,
an upper bound on the tokens (a byte-level or byte-fallback tokenizer gives at most one token
per byte, plus a prefix and the document separator), so a refusal is always right and the
pipeline's own count after the model loads stays the final word.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import ParseResult, urlparse
from urllib.request import getproxies, proxy_bypass

from . import data
from .config import DataConfig, RunConfig
from .errors import ConfigError, DataError
from .model import cheap_tokenizer, model_kind
from .secure_sum import registry

if TYPE_CHECKING:
    from .audit.config import AuditConfig

HUB_TIMEOUT_S = 3.0
SEPARATOR_BYTES = 3  # per document: at most a prefix token and a two-token "\n\n" separator


class UnusableData(ConfigError, DataError):
    """Text named by the settings that no run could use: a usage error (exit 2) and a DataError."""


def check_run(config: RunConfig) -> None:
    """Raise ConfigError (one line) on a problem of `config` that shows before the model loads."""
    config.validate()
    check_model_reachable(config.model)
    from .pipeline.texts import client_texts, eval_text  # the pipeline imports this module

    d = config.data
    try:
        texts = client_texts(d, config.seed)
        evaluation = eval_text(d)
    except DataError as exc:
        raise UnusableData(str(exc)) from None
    check_protocol(config, tuple(range(len(texts))))
    for client in config.federation.drop:
        if not 0 <= client < len(texts):
            raise ConfigError(
                f"federation.drop names client {client}, but the {len(texts)} clients "
                f"are 0..{len(texts) - 1}"
            )
    check_bytes(d, texts, evaluation)
    tokenizer = cheap_tokenizer(config.model)
    if tokenizer is not None:
        check_tokens(tokenizer, d, texts, evaluation)


def check_protocol(config: RunConfig, roster: tuple[int, ...]) -> None:
    """The protocol's options against the clients of `roster`, with the cohort option the run
    adds (the minimum cohort); ConfigError naming the option."""
    clients = len(roster)
    name, options = config.protocol.name, dict(config.protocol.options)
    info = registry.get(name)
    if info.option_names is not None:
        for option in options:
            if option not in info.option_names:
                takes = ", ".join(info.option_names) or "no options"
                raise ConfigError(
                    f"protocol.options.{option} is not an option of protocol {name} "
                    f"(it takes {takes})"
                )
    cohort = config.privacy.cohort_minimum(info.secure)
    if clients < cohort:
        raise ConfigError(
            f"protocol {name} releases sums over at least {cohort} clients (the minimum cohort), "
            f"but the run has {clients}: add clients, or lower privacy.min_cohort if every "
            "client accepts that"
        )
    info.check_options(roster, info.with_cohort(options, cohort))


def check_bytes(d: DataConfig, texts: Sequence[data.ClientText], evaluation: str) -> None:
    """No tokenizer: every client's UTF-8 bytes (an upper bound on its tokens) reach
    samples_per_client x seqlen, and the evaluation text's reach one window."""
    needed, window = d.samples_per_client * d.seqlen, d.eval_seqlen or d.seqlen
    for client in texts:
        most = sum(len(doc.encode("utf-8")) + SEPARATOR_BYTES for doc in client.documents)
        if most < needed:
            raise UnusableData(
                f"client {client.name} has {most} bytes of text, fewer than the {needed} tokens "
                f"it must give ({d.samples_per_client} samples x {d.seqlen}); give it more "
                "text, or lower data.samples_per_client or data.seqlen"
            )
    if len(evaluation.encode("utf-8")) + SEPARATOR_BYTES < window:
        raise UnusableData(_short_eval(f"{len(evaluation.encode('utf-8'))} bytes", window))


def check_tokens(
    tokenizer: object, d: DataConfig, texts: Sequence[data.ClientText], evaluation: str
) -> None:
    """The exact counts: every client gives its samples (as calibration will), the evaluation
    text one window."""
    try:
        for client in texts:
            data.calibration_samples(tokenizer, client, d.samples_per_client, d.seqlen)
    except DataError as exc:
        raise UnusableData(str(exc)) from None
    window = d.eval_seqlen or d.seqlen
    tokens = data.tokenize(tokenizer, evaluation).numel()
    if tokens < window:
        raise UnusableData(_short_eval(f"{tokens} tokens", window))


def _short_eval(has: str, window: int) -> str:
    return (
        f"the evaluation text has {has}, fewer than one window of {window} tokens "
        "(data.eval_seqlen, default data.seqlen): give a longer data.eval_text or a shorter window"
    )


def check_model_reachable(spec: str) -> None:
    """ConfigError at once for a Hub id that is not in the local cache when the Hub cannot be
    reached (instead of a minute of retries); a cached one is then loaded offline."""
    if model_kind(spec) != "hub":
        return
    cached = _hub_cached(spec)
    if _offline() or not _hub_reachable():
        if cached:
            _go_offline()
            return
        raise ConfigError(
            f"model {spec!r} is not in the local Hugging Face cache and the Hub "
            f"({_hub_host()}) cannot be reached: download it where there is network, or pass a "
            "local model folder (--model PATH, a folder with config.json)"
        )


def _hub_cached(spec: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(spec, "config.json"), str)
    except Exception:  # noqa: BLE001 -- not a valid repo id: not cached
        return False


def _offline() -> bool:
    flags = (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
    return any(str(v).upper() in ("1", "ON", "YES", "TRUE") for v in flags if v)


def _hub_endpoint() -> ParseResult:
    return urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")


def _hub_host() -> str:
    return _hub_endpoint().hostname or "huggingface.co"


def _hub_reachable() -> bool:
    """A TCP connection to the Hub (or to the proxy configured for it) opens within seconds."""
    endpoint = _hub_endpoint()
    proxy = getproxies().get(endpoint.scheme)
    target = urlparse(proxy) if proxy and not proxy_bypass(_hub_host()) else endpoint
    port = target.port or (80 if target.scheme == "http" else 443)
    try:
        with socket.create_connection((target.hostname or _hub_host(), port), HUB_TIMEOUT_S):
            return True
    except OSError:
        return False


def _go_offline() -> None:
    """Load from the cache without contacting the Hub (huggingface_hub reads its flag once)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        from huggingface_hub import constants

        constants.HF_HUB_OFFLINE = True
    except ImportError:
        pass


def check_audit(config: AuditConfig) -> None:
    """The model, and every (client count, split) of an audit grid, before its model loads."""
    check_model_reachable(config.model)
    for clients in config.clients:
        if clients < config.min_cohort:
            raise ConfigError(
                f"--clients {clients} is below the minimum cohort {config.min_cohort}: the "
                "audit would release no sum (add clients or lower --min-cohort)"
            )
    try:
        articles = data.load_corpus(config.corpus)
    except DataError as exc:
        raise UnusableData(str(exc)) from None
    pool, _ = data.heldout_split(articles)
    heldout = data.heldout_text(articles)
    d = DataConfig(samples_per_client=config.samples_per_client, seqlen=config.seqlen)
    settings = [data.split_clients(pool, clients, split, config.seed)
                for clients in config.clients for split in config.splits]  # fmt: skip
    for texts in settings:
        check_bytes(d, texts, heldout)
    tokenizer = cheap_tokenizer(config.model)
    for texts in settings if tokenizer is not None else ():
        check_tokens(tokenizer, d, texts, heldout)
    for name in config.protocols:
        info = registry.get(name)
        for clients in config.cost_clients:
            info.check_options(tuple(range(clients)), info.with_cohort({}, clients))
