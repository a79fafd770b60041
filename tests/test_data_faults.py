"""Bad data a user can hand the loaders, end to end on tiny files: each is a clear error naming the
file, or a warning and the right result, never a silent wrong dataset (issue 10)."""

import logging
import os

import numpy as np
import pytest
from test_folder import truncated_jpeg, write_folder

from jaxcnn.data.folder import ImageFolderSource, load_image_folder
from jaxcnn.report.run_log import RunLogger

SPLIT = dict(val_split=0.25, split_seed=0)


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


def test_unreadable_files_with_non_utf8_names_are_listed_by_their_own_bytes(tmp_path, capsys):
    """Linux names are bytes: b'\\xff\\xfe.jpg' is no UTF-8; the list holds it byte for byte."""
    write_folder(tmp_path / "data", {"a": 3, "b": 3}, size=(8, 8))
    empty = os.fsdecode(os.fsencode(tmp_path / "data" / "a") + b"/\xff\xfe.jpg")
    cut = os.fsdecode(os.fsencode(tmp_path / "data" / "b") + b"/\xe9t\xe9.jpg")  # Latin-1 "été"
    open(empty, "wb").close()
    truncated_jpeg(type(tmp_path)(cut))
    source = ImageFolderSource(tmp_path / "data", image_size=8)
    assert source[source.paths.index(cut)] is None  # found when read
    logger = RunLogger(tmp_path / "run")
    logger.skipped_files(source.skipped_files())
    logger.close()
    lines = (tmp_path / "run" / "skipped_files.txt").read_bytes().splitlines()
    assert [os.fsdecode(line.split(b"\t")[0]) for line in lines] == [empty, cut]  # round trip
    assert lines[0] == os.fsencode(empty) + b"\tempty file"
    assert "Skipped 2 unreadable file(s); listed in" in capsys.readouterr().out
