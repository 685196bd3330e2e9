"""Every error the package raises on purpose.

The CLI catches :class:`PathsegdiffError`, prints its message on one line and
exits non-zero.  Each specific error also subclasses the builtin it resembles,
so library users can catch ``FileNotFoundError`` or ``ValueError`` as usual.
"""

from __future__ import annotations


class PathsegdiffError(Exception):
    """Root of every expected error: the message is what the user sees."""


class StoreNotFoundError(PathsegdiffError, FileNotFoundError):
    """The path does not exist or is not a pathsegdiff store."""


class NotAStoreError(PathsegdiffError, ValueError):
    """The path exists but holds something other than a pathsegdiff store."""


class StoreExistsError(PathsegdiffError, FileExistsError):
    """Creating a store where one already exists, without overwrite."""


class SchemaVersionError(PathsegdiffError, ValueError):
    """The store was written by a newer (or unknown) layout version."""


class SchemaError(PathsegdiffError, ValueError):
    """A schema, config or batch does not have the declared shape or type."""


class IdentityMismatchError(PathsegdiffError, ValueError):
    """Appending to a store whose feature identity differs."""

    def __init__(self, path: str, differing: dict[str, tuple[object, object]]):
        self.path = path
        self.differing = differing
        fields = "; ".join(f"{k}: store has {a!r}, requested {b!r}" for k, (a, b) in differing.items())
        super().__init__(
            f"{path}: store identity differs ({fields}). "
            "Write to a new store, or pass --overwrite to replace this one."
        )


class StoreLockedError(PathsegdiffError, RuntimeError):
    """Another writer holds the store."""


class StoreReadOnlyError(PathsegdiffError, PermissionError):
    """Writing to a store opened read-only (a zip, a URL without write access)."""


class TileNotWrittenError(PathsegdiffError, KeyError):
    """Reading a tile whose status is not written."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class CorruptStoreError(PathsegdiffError, OSError):
    """A chunk or metadata document fails its checksum or cannot be decoded."""


class InputError(PathsegdiffError, ValueError):
    """An input image, mask, slide or table cannot be used."""


class ModelLoadError(PathsegdiffError, ValueError):
    """A model directory, checkpoint or config cannot be loaded."""


class ConfigError(PathsegdiffError, ValueError):
    """An option or config value is invalid."""


class MissingDependencyError(PathsegdiffError, ImportError):
    """An optional extra is needed for this operation."""

    def __init__(self, package: str, extra: str, purpose: str):
        super().__init__(
            f"{purpose} needs the '{package}' package: pip install 'pathsegdiff[{extra}]'"
        )


class StoreWriteError(PathsegdiffError, OSError):
    """Writing to a store failed (disk full, file-size limit, I/O error); tiles of that batch stay todo."""


class StoreAccessError(PathsegdiffError, PermissionError):
    """The store's location refused access (wrong or missing credentials, no permission)."""


class RemoteStoreError(PathsegdiffError, OSError):
    """The server of a remote store (S3 and its kin) could not be reached or refused the request."""


class OutputError(PathsegdiffError, OSError):
    """An output folder (a run, a report, a prediction) that cannot be written, or lacks the room."""
