"""`--download`: checksum-verified, atomic fetches (file:// URLs stand in for the network)."""

import dataclasses
import gzip

import numpy as np
import pytest
from archive_fixtures import (
    expect_records,
    idx_bytes,
    make_split,
    resource_for,
    sha256,
    tar_gz,
    write_cifar,
    write_idx_set,
)

from jaxcnn.data import cifar, mnist
from jaxcnn.data.download import ChecksumError, DownloadError, Resource, download
from jaxcnn.data.splits import DataNotFoundError

SPLIT = dict(val_split=0.2, split_seed=0)


@pytest.fixture
def cifar_archive(tmp_path, monkeypatch):
    """A CIFAR-10 binary-version archive (what --download fetches) served from tmp_path/server."""
    folder = write_cifar(tmp_path / "build", "cifar10", "binary",
                         [make_split(4, 10, seed=i) for i in range(5)], make_split(5, 10, seed=7))
    (tmp_path / "server").mkdir()
    expect_records(monkeypatch, "cifar10", train=4, test=5)
    return tar_gz(folder, tmp_path / "server")


def test_download_verifies_and_renames_into_place(tmp_path, cifar_archive):
    resource = resource_for(cifar_archive)
    path = download(resource, tmp_path / "data")
    assert path == str(tmp_path / "data" / cifar_archive.name)
    assert sha256(path) == resource.sha256
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [cifar_archive.name]


def test_wrong_checksum_keeps_nothing(tmp_path, cifar_archive):
    resource = dataclasses.replace(resource_for(cifar_archive), sha256="0" * 64)
    with pytest.raises(ChecksumError) as error:
        download(resource, tmp_path / "data")
    assert "0" * 64 in str(error.value) and sha256(cifar_archive) in str(error.value)
    assert list((tmp_path / "data").iterdir()) == []  # neither the file nor its temporary


def test_next_mirror_is_tried_and_all_failures_are_reported(tmp_path, cifar_archive):
    missing = (tmp_path / "server" / "gone.tar.gz").as_uri()
    resource = resource_for(cifar_archive, missing, cifar_archive.as_uri())
    assert sha256(download(resource, tmp_path / "data")) == resource.sha256
    with pytest.raises(DownloadError, match="gone.tar.gz") as error:
        download(Resource("x.gz", "0" * 64, 10, (missing,)), tmp_path / "other")
    assert "by hand" in str(error.value) and list((tmp_path / "other").iterdir()) == []


def test_cifar_download_flag_fetches_then_loads(tmp_path, cifar_archive, monkeypatch):
    served = resource_for(cifar_archive)
    monkeypatch.setattr(cifar, "CIFAR10", dataclasses.replace(cifar.CIFAR10, resource=served))
    with pytest.raises(DataNotFoundError, match="data.download"):  # nothing is fetched without the flag
        cifar.load_cifar10(str(tmp_path / "data"), **SPLIT)
    assert not (tmp_path / "data").exists()
    splits = cifar.load_cifar10(str(tmp_path / "data"), download=True, **SPLIT)
    assert (tmp_path / "data" / "cifar-10-binary.tar.gz").is_file()
    assert len(splits.train) + len(splits.val) == 20 and len(splits.test) == 5
    fetched = []
    monkeypatch.setattr(cifar, "fetch", lambda *a: fetched.append(a))
    cifar.load_cifar10(str(tmp_path / "data"), download=True, **SPLIT)  # present: not fetched again
    assert fetched == []


def test_cifar_download_with_the_published_checksum_rejects_other_bytes(tmp_path, cifar_archive, monkeypatch):
    """The real CIFAR-10 SHA-256 against a file that is not the real archive: refused, nothing kept."""
    served = dataclasses.replace(cifar.CIFAR10.resource, urls=(cifar_archive.as_uri(),))
    published = "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"
    assert served.sha256 == published and served.size == 170_052_171
    monkeypatch.setattr(cifar, "CIFAR10", dataclasses.replace(cifar.CIFAR10, resource=served))
    with pytest.raises(ChecksumError, match=published):
        cifar.load_cifar10(str(tmp_path / "data"), download=True, **SPLIT)
    assert list((tmp_path / "data").iterdir()) == []


def test_mnist_download_fetches_only_missing_files(tmp_path, monkeypatch):
    server = tmp_path / "server"
    arrays = write_idx_set(server)
    checksums = {p.name: (sha256(p), p.stat().st_size) for p in server.iterdir()}
    monkeypatch.setattr(mnist, "MNIST", dataclasses.replace(
        mnist.MNIST, mirrors=((tmp_path / "nowhere").as_uri() + "/", server.as_uri() + "/"), checksums=checksums))
    data = tmp_path / "data"
    data.mkdir()
    # Two files already there, uncompressed, as torchvision leaves them; the other two are fetched.
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (data / name).write_bytes(idx_bytes(arrays[name]))
    splits = mnist.load_mnist(str(data), download=True, **SPLIT)
    assert sorted(p.name for p in data.iterdir()) == [
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "train-images-idx3-ubyte", "train-labels-idx1-ubyte"]
    np.testing.assert_array_equal(splits.test.images[..., 0], arrays["t10k-images-idx3-ubyte"])
    fetched = gzip.decompress((data / "t10k-labels-idx1-ubyte.gz").read_bytes())
    assert fetched == idx_bytes(arrays["t10k-labels-idx1-ubyte"])

