"""The project's exception types.

Library code raises these with a message a user can act on; the CLI prints the message on one
line and exits non-zero. Anything else escaping is a bug.
"""


def one_line(text: str) -> str:
    """`text` with every run of whitespace (newlines included) made one space: an error line."""
    return " ".join(str(text).split())


class FedPrError(Exception):
    """Base class of every error the project raises on purpose."""


class ConfigError(FedPrError):
    """Bad user input: a flag, a value out of range, an inconsistent combination."""


class AssetError(FedPrError):
    """An embedded default could not be fetched, verified or found."""


class DataError(FedPrError):
    """Calibration or evaluation text is missing, unreadable or too short."""


class ModelError(FedPrError):
    """A model could not be loaded or has no decoder blocks we know how to prune."""


class ProtocolError(FedPrError):
    """A secure-sum protocol refused a message or could not complete (an abort)."""


class MessageDecodeError(ProtocolError):
    """A byte string is not a valid encoding of a protocol message."""


class PrivacyError(FedPrError):
    """A privacy guard refused to release a result (e.g. a cohort below the minimum size)."""
