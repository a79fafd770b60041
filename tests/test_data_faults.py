"""Bad data a user can hand the loaders, end to end on tiny files: each is a clear error naming the
file, or a warning and the right result, never a silent wrong dataset (issue 10)."""

import dataclasses
import io
import logging
import os
import tarfile
import tracemalloc

import numpy as np
import pytest
from archive_fixtures import (
    expect_records,
    gzip_bomb,
    idx_bytes,
    make_split,
    py2_pickle,
    resource_for,
    write_cifar,
    write_idx_set,
)
from test_folder import truncated_jpeg, write_folder

from jaxcnn.data import cifar, mnist
from jaxcnn.data.download import ChecksumError, DownloadError, Resource, download
from jaxcnn.data.folder import ImageFolderSource, load_image_folder
from jaxcnn.report.run_log import RunLogger

SPLIT = dict(val_split=0.25, split_seed=0)
BOMB = 50 * 2**20  # 50 MB of zeros: ~50 KB gzipped
MEMORY_LIMIT = 8 * 2**20  # what reading a bomb may allocate at most (the fixtures themselves are < 1 MB)


def _peak_memory(function, *args, **kwargs) -> tuple[int, str]:
    """The peak of Python allocations while `function` runs, and the ValueError it must raise."""
    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as error:
            function(*args, **kwargs)
        return tracemalloc.get_traced_memory()[1], str(error.value)
    finally:
        tracemalloc.stop()


def _labels_by_file(source):
    """{real file: label}; fails when one file is listed twice."""
    real = [os.path.realpath(p) for p in source.paths]
    assert len(set(real)) == len(real), "a file is listed twice"
    return dict(zip(real, source.labels.tolist()))


# --- image folders ----------------------------------------------------------------------------


def test_symlink_loop_is_not_followed_and_labels_stay_right(tmp_path, caplog):
    """`cats/loop -> ..` once turned 12 images into thousands of entries, dogs labelled cats."""
    write_folder(tmp_path, {"cats": 6, "dogs": 6}, size=(8, 8))
    os.symlink("..", tmp_path / "cats" / "loop")
    with caplog.at_level(logging.WARNING):
        data = load_image_folder(tmp_path, image_size=8, **SPLIT)
    source = data.train.source
    assert len(source) == 12 and np.bincount(source.labels).tolist() == [6, 6]
    for path, label in _labels_by_file(source).items():
        assert os.path.dirname(path) == str(tmp_path / source.class_names[label])
    assert not {source.paths[i] for i in data.train.indices} & {source.paths[i] for i in data.val.indices}
    assert f"not following the symlink {tmp_path / 'cats' / 'loop'} -> {tmp_path}: it is a cycle" in caplog.text


def test_links_into_another_class_keep_each_file_once_with_its_own_label(tmp_path, caplog):
    """Links are listed after real paths, so a dog image linked from cats/ stays a dog."""
    write_folder(tmp_path, {"cats": 3, "dogs": 3}, size=(8, 8))
    write_folder(tmp_path / "dogs" / "puppies", {"": 2}, size=(8, 8), start=10)
    os.symlink(tmp_path / "dogs" / "img000.png", tmp_path / "cats" / "a_dog.png")  # a file link
    os.symlink("../dogs/puppies", tmp_path / "cats" / "puppies")  # a folder link into another class
    os.link(tmp_path / "cats" / "img001.png", tmp_path / "cats" / "hardlink.png")  # one file, two names
    os.symlink("..", tmp_path / "dogs" / "puppies" / "up")  # a cycle two levels down
    with caplog.at_level(logging.WARNING):
        source = ImageFolderSource(tmp_path, image_size=8)
    labels = _labels_by_file(source)
    assert len(labels) == 8 and np.bincount(source.labels).tolist() == [3, 5]
    assert labels[str(tmp_path / "dogs" / "img000.png")] == 1
    assert all(label == 1 for path, label in labels.items() if "/puppies/" in path)
    assert "it is a cycle" in caplog.text and "counted once" in caplog.text


def test_a_link_to_a_folder_outside_is_followed(tmp_path):
    write_folder(tmp_path / "data", {"cats": 2, "dogs": 2}, size=(8, 8))
    write_folder(tmp_path / "elsewhere", {"more_cats": 3}, size=(8, 8), start=20)
    os.symlink(tmp_path / "elsewhere" / "more_cats", tmp_path / "data" / "cats" / "more")
    source = ImageFolderSource(tmp_path / "data", image_size=8)
    assert np.bincount(source.labels).tolist() == [5, 2]
    assert str(tmp_path / "data" / "cats" / "more" / "img020.png") in source.paths


def test_one_class_folder_is_an_error_naming_it(tmp_path):
    write_folder(tmp_path, {"cats": 4}, size=(8, 8))
    with pytest.raises(ValueError, match=rf"'{tmp_path}' holds one class folder \('cats'\): a classifier needs"
                                         r" at least 2 classes"):
        load_image_folder(tmp_path, **SPLIT)


def test_two_class_folders_that_are_one_folder_are_an_error(tmp_path):
    write_folder(tmp_path, {"cats": 2}, size=(8, 8))
    os.symlink("cats", tmp_path / "kittens")
    with pytest.raises(ValueError, match=r"kittens' is the same folder as .*cats'"):
        ImageFolderSource(tmp_path)


# --- the skipped-files list -------------------------------------------------------------------


def test_unreadable_files_with_non_utf8_names_are_listed_by_their_own_bytes(tmp_path, caplog):
    """Linux names are bytes: b'\\xff\\xfe.jpg' is no UTF-8; the list holds it byte for byte."""
    write_folder(tmp_path / "data", {"a": 3, "b": 3}, size=(8, 8))
    empty = os.fsdecode(os.fsencode(tmp_path / "data" / "a") + b"/\xff\xfe.jpg")
    cut = os.fsdecode(os.fsencode(tmp_path / "data" / "b") + b"/\xe9t\xe9.jpg")  # Latin-1 "été"
    open(empty, "wb").close()
    truncated_jpeg(type(tmp_path)(cut))
    source = ImageFolderSource(tmp_path / "data", image_size=8)
    with caplog.at_level(logging.WARNING):
        assert source[source.paths.index(cut)] is None  # found when read
    assert r"b/\xe9t\xe9.jpg: truncated image" in caplog.text  # the bytes, as `ls -b` shows them
    logger = RunLogger(tmp_path / "run")
    caplog.set_level(logging.INFO, logger="jaxcnn")
    logger.skipped_files(source.skipped_files())
    logger.close()
    lines = (tmp_path / "run" / "skipped_files.txt").read_bytes().splitlines()
    assert [os.fsdecode(line.split(b"\t")[0]) for line in lines] == [empty, cut]  # round trip
    assert lines[0] == os.fsencode(empty) + b"\tempty file"
    assert "Skipped 2 unreadable file(s); listed in" in caplog.text


# --- CIFAR members --------------------------------------------------------------------------------


def _cifar10_folder(tmp_path, monkeypatch, fmt):
    expect_records(monkeypatch, "cifar10", train=6, test=10)
    folder = write_cifar(tmp_path / "data", "cifar10", fmt, [make_split(6, 10, seed=i) for i in range(5)],
                         make_split(10, 10, seed=9))
    return tmp_path / "data", folder


def test_the_published_record_counts_are_expected():
    assert (cifar.CIFAR10.train_records, cifar.CIFAR10.test_records) == (10_000, 10_000)
    assert (cifar.CIFAR100.train_records, cifar.CIFAR100.test_records) == (50_000, 10_000)


def test_empty_cifar_binary_member_is_an_error_naming_it(tmp_path, monkeypatch):
    """An empty data_batch_4.bin once loaded silently with a fifth of the training set missing."""
    data_dir, folder = _cifar10_folder(tmp_path, monkeypatch, "binary")
    (folder / "data_batch_4.bin").write_bytes(b"")
    with pytest.raises(ValueError, match=rf"^{folder / 'data_batch_4.bin'} holds no images, but the published file"
                                         r" holds 6\. It is truncated or not a CIFAR file"):
        cifar.load_cifar10(str(data_dir), **SPLIT)


def test_short_cifar_python_batch_is_an_error_naming_it(tmp_path, monkeypatch):
    data_dir, folder = _cifar10_folder(tmp_path, monkeypatch, "python")
    short = make_split(3, 10, seed=5)
    (folder / "data_batch_2").write_bytes(py2_pickle({b"labels": [int(x) for x in short.labels], b"data": short.rows}))
    with pytest.raises(ValueError, match=r"data_batch_2 holds 3 images, but the published file holds 6"):
        cifar.load_cifar10(str(data_dir), **SPLIT)


@pytest.mark.parametrize("member", ["data_batch_1.bin", "readme.html"])
def test_cifar_archive_member_beyond_its_cap_is_refused_unread(tmp_path, monkeypatch, member):
    """A tar.gz whose member unpacks to 50 MB: refused from its tar header, before any is read."""
    _, folder = _cifar10_folder(tmp_path, monkeypatch, "binary")
    archive = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar, open("/dev/zero", "rb") as zeros:
        for path in sorted(folder.iterdir()):
            info = tar.gettarinfo(path, arcname=f"{folder.name}/{path.name}")
            if path.name == member:
                info.size = BOMB
                tar.addfile(info, zeros)
            else:
                with open(path, "rb") as f:
                    tar.addfile(info, f)
    assert archive.stat().st_size < 1_000_000
    peak, message = _peak_memory(cifar.load_cifar10, str(tmp_path), **SPLIT)
    assert peak < MEMORY_LIMIT
    if member == "readme.html":
        assert message.startswith(f"{archive}: {folder.name}/readme.html ({BOMB} bytes) runs past the")
    else:
        assert message.startswith(f"{archive}: {folder.name}/{member} is larger than the {6 * 3073} bytes it can"
                                  " hold; it was not read (a corrupt file or a decompression bomb).")


# --- idx files ------------------------------------------------------------------------------------


def test_idx_gzip_bomb_is_refused_after_reading_only_what_its_header_declares(tmp_path):
    write_idx_set(tmp_path, train_n=20, test_n=10)
    bomb = gzip_bomb(tmp_path / "t10k-labels-idx1-ubyte.gz", idx_bytes(np.arange(10, dtype=np.uint8)), BOMB)
    assert bomb.stat().st_size < 100_000
    peak, message = _peak_memory(mnist.load_mnist, str(tmp_path), **SPLIT)
    assert peak < MEMORY_LIMIT
    assert message == (f"{bomb} is too long: it holds more than the 18 bytes its header declares for (10,) values"
                       " (refused unread: a corrupt file or a decompression bomb).")


def test_idx_header_beyond_the_dataset_is_refused(tmp_path):
    write_idx_set(tmp_path, train_n=20, test_n=10)
    huge = tmp_path / "t10k-images-idx3-ubyte.gz"
    gzip_bomb(huge, bytes([0, 0, 8, 3]) + (2**31).to_bytes(4, "big") + bytes([0, 0, 0, 28]) * 2, 0)
    with pytest.raises(ValueError, match=rf"^{huge} declares shape \(2147483648, 28, 28\); this dataset's file holds"
                                         r" at most 10000 records of 28x28 bytes\.$"):
        mnist.load_mnist(str(tmp_path), **SPLIT)


def test_idx_file_with_no_records_is_an_error_naming_it(tmp_path):
    write_idx_set(tmp_path, train_n=20, test_n=10, gz=False)
    empty = tmp_path / "t10k-images-idx3-ubyte"
    empty.write_bytes(idx_bytes(np.zeros((0, 28, 28), np.uint8)))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(0, np.uint8)))
    with pytest.raises(ValueError, match=rf"^{empty} holds no records: its header declares shape \(0, 28, 28\)\.$"):
        mnist.load_mnist(str(tmp_path), **SPLIT)


# --- downloads ------------------------------------------------------------------------------------


def _resources():
    yield cifar.CIFAR10.resource
    yield cifar.CIFAR100.resource
    for dataset in (mnist.MNIST, mnist.FASHION_MNIST):
        for name in dataset.checksums:
            yield dataset.resource(name.removesuffix(".gz"))


def test_every_download_is_https_with_a_sha256_and_size():
    for resource in _resources():
        assert resource.urls and all(url.startswith("https://") for url in resource.urls), resource
        assert len(resource.sha256) == 64 and int(resource.sha256, 16) >= 0 and resource.size > 0, resource
    with pytest.raises(ValueError, match=r"http://yann.lecun.com/x.gz cannot serve x.gz: only https and file URLs"):
        Resource("x.gz", "0" * 64, 1, ("http://yann.lecun.com/x.gz",))


class _FakeResponse(io.RawIOBase):
    """What urlopen returns: `url` after redirects, and an endless body of zeros (at most `limit` bytes)."""

    def __init__(self, url, limit=10 * 2**20):
        self.url, self.left, self.headers = url, limit, {}

    def geturl(self):
        return self.url

    def read(self, n=-1):
        assert self.left > 0, "read on and on past the published size"
        n = min(n, self.left)
        self.left -= n
        return bytes(n)


def test_download_stops_at_the_published_size_and_refuses_http_redirects(tmp_path, monkeypatch):
    resource = Resource("x.gz", "0" * 64, 1000, ("https://a.example/x.gz", "https://b.example/x.gz"))
    responses = {"https://a.example/x.gz": _FakeResponse("https://a.example/x.gz"),
                 "https://b.example/x.gz": _FakeResponse("http://b.example/x.gz")}  # redirected to plain http
    monkeypatch.setattr("urllib.request.urlopen", lambda url, timeout: responses[url])
    with pytest.raises(ChecksumError) as error:
        download(resource, tmp_path)
    assert "https://a.example/x.gz: sends more than the published 1000 bytes" in str(error.value)
    assert "http://b.example/x.gz cannot serve x.gz: only https and file URLs are used, not http" in str(error.value)
    assert responses["https://a.example/x.gz"].left == 10 * 2**20 - 1001  # one byte past the size, no more
    assert list(tmp_path.iterdir()) == []


def test_download_of_a_short_file_fails_its_checksum(tmp_path):
    served = tmp_path / "served.gz"
    served.write_bytes(b"abc")
    resource = dataclasses.replace(resource_for(served), size=4)
    with pytest.raises(ChecksumError, match=r"got 3 bytes with sha256 .*, published are 4 bytes"):
        download(resource, tmp_path / "data")
    with pytest.raises(DownloadError):
        download(resource_for(served, (tmp_path / "gone.gz").as_uri()), tmp_path / "data")
