"""captag's own errors: one family, each also the builtin error it is a kind of.

The command line prints a `CaptagError` as one line (`captag: error: ...`, exit 2): it is a
mistake in the user's input that the message explains. Anything else is a bug or an
environment failure (out of memory, a library error) and shows its traceback (exit 1). A
`TrainingInterrupted` (SIGTERM, Ctrl-C) prints as one line and exits with the signal's code.
Code that catches builtins keeps working: `DataFormatError` is a `ValueError`, and so on.
"""

from __future__ import annotations


class CaptagError(Exception):
    """Base of every error that captag raises on purpose, with a message for the user."""


class ConfigError(CaptagError, ValueError):
    """A setting has a wrong type, value or name."""


class DataFormatError(CaptagError, ValueError):
    """A CSV file does not follow the expected format; the message says where and what to do."""

    def __init__(self, path, line: int, problem: str, fix: str, image_id: str | None = None):
        self.path, self.line, self.image_id = str(path), line, image_id
        record = f"record {image_id}: " if image_id else ""
        super().__init__(f"{path}:{line}: {record}{problem}. {fix}")


class DataNotFoundError(CaptagError, FileNotFoundError):
    """An input file or folder (CSV, image folder, config file) does not exist."""


class BadImagesError(CaptagError, ValueError):
    """Some images are missing or cannot be decoded; nothing was started."""


class WeightsNotFoundError(CaptagError, FileNotFoundError):
    """No pretrained weights could be found for an encoder."""


class InputError(CaptagError, ValueError):
    """Arguments of the Python API have the wrong form (e.g. fewer captions than images)."""


class RunFolderError(CaptagError, ValueError):
    """A run folder is missing, incomplete, corrupt, in use, or already holds another run."""


class OutputError(CaptagError, OSError):
    """An output path cannot be written (a folder where a file is wanted, no permission)."""


class TrainingInterrupted(CaptagError):
    """A training run was stopped by a signal (SIGTERM, Ctrl-C); the message says what was
    saved and how to go on. `exit_code` is the shell's for that signal (128 + its number)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code
