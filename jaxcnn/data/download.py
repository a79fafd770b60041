"""`--download`: fetch a dataset file from its canonical URL and verify its published MD5.

A file only ever appears under its final name complete and verified: it is streamed to a
temporary file beside it, hashed on the way, and renamed into place when the checksum matches.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request

from tqdm.auto import tqdm

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class Resource:
    """A file a dataset needs: its name, its published MD5, and the URLs serving it (in order)."""

    filename: str
    md5: str
    urls: tuple[str, ...]


class ChecksumError(ValueError):
    """A downloaded file does not match its published checksum (it was discarded)."""


class DownloadError(OSError):
    """No URL of a resource could be fetched."""


def md5sum(path: str | os.PathLike) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def download(resource: Resource, directory: str | os.PathLike) -> str:
    """Fetch `resource` into `directory` and return its path; each URL is tried in turn.

    Raises ChecksumError when what was served does not match the published MD5, DownloadError
    when no URL could be read. Neither leaves a file behind.
    """
    os.makedirs(directory, exist_ok=True)
    target = os.path.join(directory, resource.filename)
    failures, bad_checksum = [], False
    for url in resource.urls:
        try:
            _fetch(url, target, resource.md5)
            return target
        except ChecksumError as error:
            failures.append(str(error))
            bad_checksum = True
        except (urllib.error.URLError, OSError) as error:
            failures.append(f"{url}: {error}")
    tried = "\n  ".join(failures)
    advice = f"Download it by hand into {directory}/ (md5 {resource.md5}) or try again later."
    if bad_checksum:
        raise ChecksumError(f"{resource.filename} failed its checksum; nothing was kept:\n  {tried}\n{advice}")
    raise DownloadError(f"Could not download {resource.filename}:\n  {tried}\n{advice}")


def _fetch(url: str, target: str, md5: str) -> None:
    """Stream `url` to a temp file beside `target`, check its MD5, then rename it into place."""
    directory, name = os.path.split(target)
    fd, partial = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=directory)
    digest = hashlib.md5(usedforsecurity=False)
    log.info("Downloading %s -> %s", url, target)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            size = response.headers.get("Content-Length")
            with tqdm(total=int(size) if size else None, unit="B", unit_scale=True,
                      unit_divisor=1024, desc=name) as progress:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    progress.update(len(chunk))
        if digest.hexdigest() != md5:
            raise ChecksumError(f"{url}: got md5 {digest.hexdigest()}, published md5 is {md5}")
        os.chmod(partial, 0o644)  # mkstemp creates 0600; a dataset file is readable by all
        os.replace(partial, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        raise
