"""`--download`: fetch a dataset file over https and verify its published size and SHA-256.

A file only ever appears under its final name complete and verified: it is streamed to a
temporary file beside it, hashed on the way, and renamed into place when the checksum matches.
Never more than the published size is written, and plain http is refused (also as a redirect).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request

from tqdm.auto import tqdm

from jaxcnn.errors import UserError

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
SCHEMES = ("https", "file")  # file: a local mirror (and the tests)


@dataclasses.dataclass(frozen=True)
class Resource:
    """A file a dataset needs: its name, published SHA-256 and size in bytes, and the URLs serving it (in order)."""

    filename: str
    sha256: str
    size: int
    urls: tuple[str, ...]

    def __post_init__(self):
        for url in self.urls:
            _check_scheme(url, self.filename)


def _check_scheme(url: str, filename: str) -> None:
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in SCHEMES:
        raise ValueError(f"{url} cannot serve {filename}: only {' and '.join(SCHEMES)} URLs are used, not {scheme}.")


class ChecksumError(UserError, ValueError):
    """A downloaded file does not match its published checksum (it was discarded)."""


class DownloadError(OSError):
    """No URL of a resource could be fetched."""


def download(resource: Resource, directory: str | os.PathLike) -> str:
    """Fetch `resource` into `directory` and return its path; each URL is tried in turn.

    Raises ChecksumError when what was served does not match the published size and SHA-256,
    DownloadError when no URL could be read. Neither leaves a file behind.
    """
    os.makedirs(directory, exist_ok=True)
    target = os.path.join(directory, resource.filename)
    failures, bad_checksum = [], False
    for url in resource.urls:
        try:
            _fetch(url, target, resource)
            return target
        except ChecksumError as error:
            failures.append(str(error))
            bad_checksum = True
        except (urllib.error.URLError, OSError, ValueError) as error:
            failures.append(f"{url}: {error}")
    tried = "\n  ".join(failures)
    advice = (f"Download it by hand into {directory}/ ({resource.size} bytes, sha256 {resource.sha256})"
              " or try again later.")
    if bad_checksum:
        raise ChecksumError(f"{resource.filename} failed its checksum; nothing was kept:\n  {tried}\n{advice}")
    raise DownloadError(f"Could not download {resource.filename}:\n  {tried}\n{advice}")


def _fetch(url: str, target: str, resource: Resource) -> None:
    """Stream `url` to a temp file beside `target`, check size and SHA-256, then rename it into place."""
    directory, name = os.path.split(target)
    fd, partial = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=directory)
    digest, received = hashlib.sha256(), 0
    log.info("Downloading %s -> %s", url, target)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            _check_scheme(response.geturl(), name)  # a redirect to plain http is refused unread
            with tqdm(total=resource.size, unit="B", unit_scale=True, unit_divisor=1024, desc=name) as progress:
                while chunk := response.read(min(_CHUNK, resource.size + 1 - received)):
                    received += len(chunk)
                    if received > resource.size:
                        raise ChecksumError(f"{url}: sends more than the published {resource.size} bytes")
                    out.write(chunk)
                    digest.update(chunk)
                    progress.update(len(chunk))
        if received != resource.size or digest.hexdigest() != resource.sha256:
            raise ChecksumError(f"{url}: got {received} bytes with sha256 {digest.hexdigest()}, published are"
                                f" {resource.size} bytes with sha256 {resource.sha256}")
        os.chmod(partial, 0o644)  # mkstemp creates 0600; a dataset file is readable by all
        os.replace(partial, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        raise
