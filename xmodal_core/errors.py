"""Exceptions that carry a message a person can act on.

Everything raised on purpose by xmodal derives from `XmodalError`; the CLI prints
its message and exits non-zero, the app shows it in the page. Anything else is a bug.
"""


class XmodalError(Exception):
    """Base class: the message says what happened and what to do."""


class InputError(XmodalError, ValueError):
    """A person's input (file, text, template, setting) cannot be used."""


class AudioError(InputError):
    """Audio that cannot be decoded or is outside the accepted limits."""


class ImageError(InputError):
    """An image that cannot be decoded or is outside the accepted limits."""


class ModelNotFoundError(XmodalError, LookupError):
    """A model name that does not resolve to weights available offline."""


class DatasetError(XmodalError):
    """A dataset that is missing, not built yet, or malformed."""


class StoreError(XmodalError):
    """The run store refused an operation (unknown run, bad state change)."""
