"""Output that is all or nothing, and text that survives any file name.

Files the user names (`predict --output`, `export --output`, `export-torch OUT`) are checked for
writing before any work (`check_writable`), then written to a temporary name in the same folder
and renamed into place (`atomic_path`, `atomic_write`, `atomic_folder`): a failure (a full disk,
an exception, Ctrl-C) leaves the old file or nothing, never half of one.

File names need not be UTF-8 (Linux allows any bytes); Python holds the bytes it cannot decode as
surrogate escapes (`os.fsdecode`), e.g. every non-ASCII name under `LANG=C`. Text files are UTF-8
whatever the locale and are written with `TEXT_ERRORS`, which writes such a name back as the bytes
it was; JSON holds `utf8_text(name)`; the console streams get the same handler (`safe_console`);
figures, which cannot draw surrogates, show `displayable(name)`.

Only the standard library is used, so that `jaxcnn.weights` and the command line import it cheaply.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import pathlib
import secrets
import shutil
import sys
from typing import Iterator

from jaxcnn.errors import UserError

TEXT_ERRORS = "jaxcnn.surrogateescape"
_ESCAPES = range(0xDC80, 0xDD00)  # the surrogates that stand for undecodable bytes 0x80..0xff


def _surrogateescape_else_backslash(error: UnicodeError):
    """Undecodable file-name bytes (surrogate escapes) back as those bytes; any other character
    the encoding lacks as a backslash escape (`\\u03a9`), so nothing raises."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    text = error.object[error.start:error.end]
    if all(ord(char) in _ESCAPES for char in text):
        return bytes(ord(char) - 0xDC00 for char in text), error.end
    return codecs.backslashreplace_errors(error)


codecs.register_error(TEXT_ERRORS, _surrogateescape_else_backslash)


def utf8_text(text: str) -> str:
    """`text` with the surrogate escapes that spell UTF-8 (a name read under `LANG=C`) decoded to
    the characters they spell; escapes of bytes that are not UTF-8 are kept, so that the text
    still writes back as the name's bytes. For JSON, which would otherwise hold the escapes."""
    return text.encode("utf-8", TEXT_ERRORS).decode("utf-8", "surrogateescape")


def displayable(text: str) -> str:
    """`text` as it can be drawn or shown anywhere: surrogate escapes decoded as the UTF-8 they
    were (a name read under `LANG=C`), or U+FFFD where their bytes are not UTF-8."""
    return text.encode("utf-8", TEXT_ERRORS).decode("utf-8", "replace")


def safe_console() -> None:
    """Make printing to stdout / stderr never fail on a character: file names go out as their
    bytes, characters the console's encoding lacks (`Ω` under `LANG=C`) as backslash escapes."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure") and stream.errors in ("strict", "surrogateescape"):
            with contextlib.suppress(ValueError, OSError):  # a closed or detached stream
                stream.reconfigure(errors=TEXT_ERRORS)


class OutputPathError(UserError, ValueError):
    """An output file or folder cannot be written where the user asked; the message names it."""


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


def check_writable(path, *, what: str = "output", folder: bool = False) -> pathlib.Path:
    """`path` as a Path, checked now so that a mistake fails before any work is done: its parent
    folder exists and takes new files, and an existing `path` is a folder if `folder` else a file
    (it will be replaced). Raises `OutputPathError` naming `what` and the path."""
    path = pathlib.Path(path).expanduser()
    parent = path.absolute().parent
    kind = "folder" if folder else "file"
    if not parent.is_dir():
        found = "is not a folder" if parent.exists() else "does not exist"
        raise OutputPathError(f"cannot write the {what} {kind} {path}: {parent} {found} (create it first)")
    if path.exists() and path.is_dir() != folder:
        raise OutputPathError(f"cannot write the {what} {kind} {path}: it exists and is "
                              f"{'not a folder' if folder else 'a folder'}")
    probe = parent / _temporary_name(path, "probe")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        probe.unlink()
    except OSError as error:
        raise OutputPathError(f"cannot write the {what} {kind} {path}: {parent} does not take new files "
                              f"({_reason(error)})") from None
    return path


def _temporary_name(path: pathlib.Path, kind: str = "tmp") -> str:
    """A hidden unique name for a file beside `path`, with `path`'s suffix (which some writers,
    such as matplotlib's savefig, read the format from)."""
    return f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}.{kind}{path.suffix}"


def _remove(path: pathlib.Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_path(path) -> Iterator[pathlib.Path]:
    """A temporary path beside `path` to write to; when the block succeeds it replaces `path`
    (`os.replace`), when it fails it is removed and `path` is as it was."""
    path = pathlib.Path(path)
    temporary = path.parent / _temporary_name(path)
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        _remove(temporary)
        raise


@contextlib.contextmanager
def atomic_write(path, mode: str = "w", **open_options):
    """`open(path, mode)` all or nothing (see `atomic_path`); text is UTF-8 with `TEXT_ERRORS`
    unless `open_options` say otherwise."""
    if "b" not in mode:
        open_options = {"encoding": "utf-8", "errors": TEXT_ERRORS, **open_options}
    with atomic_path(path) as temporary, open(temporary, mode, **open_options) as file:
        yield file


@contextlib.contextmanager
def atomic_folder(path) -> Iterator[pathlib.Path]:
    """A temporary folder beside `path` to fill; when the block succeeds it takes `path`'s place,
    keeping whatever else an existing `path` held (the files written replace theirs), and when it
    fails it is removed and `path` is as it was."""
    path = pathlib.Path(path)
    temporary = path.parent / _temporary_name(path)
    temporary.mkdir()
    try:
        yield temporary
    except BaseException:
        _remove(temporary)
        raise
    if not path.exists():
        temporary.rename(path)
        return
    old = path.parent / _temporary_name(path, "old")
    path.rename(old)  # from here until the rename below the old contents are under `old`, whole
    temporary.rename(path)
    for item in old.iterdir():
        if not os.path.lexists(path / item.name):
            item.rename(path / item.name)
    _remove(old)
