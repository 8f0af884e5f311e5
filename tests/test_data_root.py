"""core.evaluation.data_root: no server path without a data root; under one, nothing outside it, whatever
`..` or symbolic links say; and labels whose rows point out are refused."""
from __future__ import annotations

import pytest

from core.evaluation.data_root import (DATA_ROOT_ENV, PathNotAllowedError, data_root,
                                       resolve_under, shown)
from core.evaluation.evaluate import load_labels


@pytest.fixture
def root(tmp_path):
    folder = tmp_path / "root"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "clip.mp4").write_bytes(b"x")
    (folder / "labels.csv").write_text("path,label\nsub/clip.mp4,REAL\n")
    (tmp_path / "outside.csv").write_text("path,label\nclip.mp4,REAL\n")
    return folder.resolve()


def test_no_data_root_means_no_server_path():
    assert data_root({}) is None
    assert data_root({DATA_ROOT_ENV: "/no/such/folder"}) is None
    with pytest.raises(PathNotAllowedError, match=DATA_ROOT_ENV):
        resolve_under(None, "labels.csv")


def test_a_good_path_under_the_root_resolves(root):
    assert data_root({DATA_ROOT_ENV: str(root)}) == root
    assert resolve_under(root, "labels.csv") == root / "labels.csv"
    assert resolve_under(root, str(root / "sub" / "clip.mp4")) == root / "sub" / "clip.mp4"
    assert resolve_under(root, "sub/../labels.csv") == root / "labels.csv"
    assert shown(root, root / "sub" / "clip.mp4") == "sub/clip.mp4"
    videos = load_labels(resolve_under(root, "labels.csv"), root=root)
    assert [v.path for v in videos] == [root / "sub" / "clip.mp4"]


@pytest.mark.parametrize("path", ["/etc/passwd", "../outside.csv", "sub/../../outside.csv",
                                  "../../../../etc/passwd", "link_out.csv", "sub/dir_link/x"])
def test_escapes_are_refused(root, path):
    (root / "link_out.csv").symlink_to(root.parent / "outside.csv")
    (root / "sub" / "dir_link").symlink_to(root.parent, target_is_directory=True)
    with pytest.raises(PathNotAllowedError, match="outside the data root"):
        resolve_under(root, path)


def test_labels_whose_rows_leave_the_root_are_refused(root):
    (root / "bad.csv").write_text("path,label\nsub/clip.mp4,REAL\n../outside.csv,FAKE\n")
    with pytest.raises(PathNotAllowedError, match="row 2 names ../outside.csv"):
        load_labels(root / "bad.csv", root=root)
    (root / "abs.csv").write_text("path,label\n/etc/passwd,REAL\n")
    with pytest.raises(PathNotAllowedError, match="outside the data root"):
        load_labels(root / "abs.csv", root=root)
    with pytest.raises(Exception) as missing:
        load_labels(root / "nope.csv", root=root)
    assert str(root) not in str(missing.value)
