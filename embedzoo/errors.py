"""Exceptions that tell the user what went wrong and what to do about it.

Every error embedzoo raises on purpose derives from `EmbedzooError`, carries a `hint` (the next
step for the user) and prints as one or two readable lines; the CLI shows them without a traceback.
"""

from __future__ import annotations


class EmbedzooError(Exception):
    """Base class: a message that names the thing at fault, and a hint saying what to do."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class ModelNotFoundError(EmbedzooError, KeyError):
    """No card in the catalog has this id or alias."""


class DuplicateNameError(EmbedzooError):
    """Two providers (registry.yaml, plugins) claim the same model id or alias."""


class CardError(EmbedzooError, ValueError):
    """A model card in the catalog is malformed."""


class PluginError(EmbedzooError):
    """A plugin is missing, failed to load, or does not provide what its card needs."""


class ConfigError(EmbedzooError, ValueError):
    """A knob (layer, readout, hop, window, mode, ...) has a value the model cannot honour."""


class WeightsError(EmbedzooError):
    """Weights could not be found, fetched, verified, converted or loaded."""


class ChecksumError(WeightsError):
    """A file's sha256 or revision does not match the pinned one; the file was removed."""


class OfflineError(WeightsError):
    """The weights are not available locally and embedzoo may not download them."""


class AudioError(EmbedzooError, ValueError):
    """An audio file or array cannot be used: unreadable, empty, non-finite, ..."""

    def __init__(self, message: str, hint: str | None = None, path: str | None = None):
        super().__init__(message, hint)
        self.path = path
