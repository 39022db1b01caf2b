"""User errors of the command line: one clear line on stderr and exit code 2, never a traceback.

A sub-command raises :class:`UsageError` for anything the user can fix (a bad flag value, a path
that cannot be written, a config that does not load); :func:`nmelab.cli.main` prints
``nmelab <command>: error: <message>`` and returns 2. Anything else that escapes is a bug in
nmelab and keeps its traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["UsageError", "check_output_dir", "check_output_file"]


class UsageError(Exception):
    """An error the user can fix; its message names the argument or path and what was wrong."""


def check_output_dir(path: str | Path, *, arg: str) -> Path:
    """Check, before any work starts, that ``path`` is (or can be made) a writable folder.

    Raises:
      UsageError: ``path`` is a file, lies under a file, or cannot be created or written.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{arg} {path}: exists and is not a folder")
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise UsageError(f"{arg} {path}: {existing} is a file, so no folder can be made under it")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{arg} {path}: {existing} is not writable")
    return path


def check_output_file(path: str | Path, *, arg: str) -> Path:
    """Check, before any work starts, that the file ``path`` can be written (its folder too).

    Raises:
      UsageError: ``path`` is a folder, its folder cannot be made, or it cannot be written.
    """
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{arg} {path}: is a folder, expected a file path")
    check_output_dir(path.parent, arg=arg)
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"{arg} {path}: exists and is not writable")
    return path
