"""``atomic_folder()``: a folder appears whole at its destination or not at all, and an older folder
is replaced (or, with ``merge=True``, updated) only at the end."""

from __future__ import annotations

from pathlib import Path

import pytest

from onnx2fx.atomic_folder import StagedFolder, atomic_folder, is_staging_name


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_new_folder_appears_when_the_block_ends(tmp_path: Path) -> None:
    target = tmp_path / "deeper" / "out"
    with atomic_folder(target) as folder:
        assert folder.name == "out" and is_staging_name(folder.parent.name)
        assert folder.parent.parent == target.parent  # beside the destination: one file system
        (folder / "a.txt").write_text("a")
        assert not target.exists()
    assert _names(target) == ["a.txt"]
    assert _names(tmp_path / "deeper") == ["out"]


def test_an_older_folder_is_replaced_whole(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    (target / "same.txt").write_text("old")
    with atomic_folder(target) as folder:
        (folder / "same.txt").write_text("new")
        assert _names(target) == ["old.txt", "same.txt"]  # untouched until the end
    assert _names(target) == ["same.txt"]
    assert (target / "same.txt").read_text() == "new"
    assert _names(tmp_path) == ["out"]


def test_merge_replaces_files_and_keeps_the_others(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    (target / "model.py").write_text("old")
    with atomic_folder(target, merge=True) as folder:
        (folder / "model.py").write_text("new")
    assert _names(target) == ["model.py", "notes.txt"]
    assert (target / "model.py").read_text() == "new" and (target / "notes.txt").read_text() == "keep me"
    assert _names(tmp_path) == ["out"]


def test_merge_into_an_empty_folder_installs_the_whole_folder(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    with atomic_folder(target, merge=True) as folder:
        (folder / "sub").mkdir()
        (folder / "sub" / "x.txt").write_text("x")
    assert (target / "sub" / "x.txt").read_text() == "x"
    assert _names(tmp_path) == ["out"]


@pytest.mark.parametrize("merge", [False, True])
def test_an_error_leaves_the_destination_as_it_was(tmp_path: Path, merge: bool) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="writer failed"), atomic_folder(target, merge=merge) as folder:
        (folder / "old.txt").write_text("half")
        raise RuntimeError("writer failed")
    assert _names(target) == ["old.txt"] and (target / "old.txt").read_text() == "old"
    assert _names(tmp_path) == ["out"]  # no staging folder left


def test_an_error_leaves_no_new_folder(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_folder(tmp_path / "out") as folder:
        (folder / "a.txt").write_text("a")
        raise RuntimeError("stop")
    assert _names(tmp_path) == []


def test_merge_onto_a_file_is_an_error_and_leaves_the_file(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.write_text("a file")
    with pytest.raises(NotADirectoryError, match=r"output path .*out exists and is not a folder"), \
            atomic_folder(target, merge=True) as folder:
        (folder / "a.txt").write_text("a")
    assert target.read_text() == "a file"
    assert _names(tmp_path) == ["out"]


def test_staged_folder_keeps_scratch_files_out_of_the_result(tmp_path: Path) -> None:
    staged = StagedFolder(tmp_path / "out")
    (staged.area / "worker.log").write_text("log")
    (staged.path / "report.json").write_text("{}")
    staged.install()
    assert _names(tmp_path / "out") == ["report.json"]
    assert _names(tmp_path) == ["out"]
    discarded = StagedFolder(tmp_path / "other")
    (discarded.path / "half.txt").write_text("half")
    discarded.discard()
    assert _names(tmp_path) == ["out"]
