"""The exceptions lsr raises.

Every error is an :class:`LsrError`; most also subclass the builtin a caller would naturally catch
(``ValueError`` for bad input, ``FileNotFoundError`` for a missing path), so that ``except ValueError``
keeps working for people who never heard of lsr. Messages are one line and carry the bad value, because
the CLI prints them verbatim.
"""

from __future__ import annotations

__all__ = [
    "LsrError",
    "InvalidInputError",
    "InvalidQueryError",
    "IndexNotFoundError",
    "IndexFormatError",
    "IndexLockedError",
    "VocabularyMismatchError",
    "ModelNotFoundError",
    "MissingDependencyError",
    "JobStateError",
]


class LsrError(Exception):
    """Base class of every error lsr raises on purpose."""


class InvalidInputError(LsrError, ValueError):
    """Input data (a corpus, a vector file, an array) is malformed."""


class InvalidQueryError(InvalidInputError):
    """A search request is malformed: k out of range, wrong dimension, bad vector."""


class IndexNotFoundError(LsrError, FileNotFoundError):
    """The path is not an lsr index (no manifest)."""


class IndexFormatError(LsrError, ValueError):
    """An index exists but its files are missing, truncated, corrupt or of an unknown format version."""


class IndexLockedError(IndexFormatError):
    """Another writer holds the index's write lock."""


class VocabularyMismatchError(InvalidQueryError):
    """Queries were encoded with a vocabulary other than the index's."""


class ModelNotFoundError(LsrError, OSError):
    """A model id or folder could not be loaded."""


class MissingDependencyError(LsrError, ImportError):
    """An optional dependency is not installed; the message names the install command."""


class JobStateError(LsrError, ValueError):
    """A batch job's output folder belongs to a different job (other input, model or settings)."""
