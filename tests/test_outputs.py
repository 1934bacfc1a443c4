"""Output files: published whole, never over a file that appeared during the run (barrierlb.outputs)."""

import os
import stat

import pytest

from barrierlb import outputs
from barrierlb.outputs import output_file, write_text


def _names(directory):
    return sorted(p.name for p in directory.iterdir())


def test_a_new_file_is_published_whole_with_the_umask_permissions(tmp_path):
    target = tmp_path / "r.json"
    with output_file(target) as out:
        assert not target.exists()                  # nothing at the path until the writing has finished
        out.partial.write_text("[1, 2]")
    assert out.path == target and not out.moved_aside and out.note() == f"wrote {target}"
    assert target.read_text() == "[1, 2]" and _names(tmp_path) == ["r.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_a_file_that_appeared_is_left_and_the_output_goes_to_the_first_free_name(tmp_path):
    target = tmp_path / "r.json"
    (tmp_path / "r.json.1").write_text("earlier aside")
    with output_file(target) as out:
        out.partial.write_text("results")
        target.write_text("appeared meanwhile")
    assert out.moved_aside and out.path == tmp_path / "r.json.2"
    assert target.read_text() == "appeared meanwhile" and (tmp_path / "r.json.1").read_text() == "earlier aside"
    assert out.path.read_text() == "results" and "r.json appeared during the run" in out.note()
    assert _names(tmp_path) == ["r.json", "r.json.1", "r.json.2"]


def test_force_replaces_the_file(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old")
    assert write_text(target, "new", force=True).path == target
    assert target.read_text() == "new" and _names(tmp_path) == ["r.json"]


def test_a_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "r.json"
    with pytest.raises(RuntimeError, match="interrupted"), output_file(target) as out:
        out.partial.write_text("half")
        raise RuntimeError("interrupted")
    assert out.path is None and _names(tmp_path) == []


def test_every_name_taken_is_an_error_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(outputs, "ASIDE_NAMES", 2)
    for name in ("r.json", "r.json.1", "r.json.2"):
        (tmp_path / name).write_text(name)
    with pytest.raises(FileExistsError, match=r"r.json.1 to .2 all exist; the results were not written"):
        write_text(tmp_path / "r.json", "results")
    assert [(tmp_path / n).read_text() for n in _names(tmp_path)] == ["r.json", "r.json.1", "r.json.2"]


def test_without_hard_links_the_file_is_still_created_exclusively(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    target = tmp_path / "r.json"
    target.write_text("there first")
    out = write_text(target, "results")
    assert out.path == tmp_path / "r.json.1" and out.path.read_text() == "results"
    assert target.read_text() == "there first" and _names(tmp_path) == ["r.json", "r.json.1"]


def test_refuse_existing_names_the_first_output_that_exists(tmp_path, capsys):
    import argparse

    parser = argparse.ArgumentParser(prog="example")
    (tmp_path / "r.png").write_text("keep")
    outputs.refuse_existing(parser, {"--json": str(tmp_path / "new.json"), "--csv": None})     # nothing there
    with pytest.raises(SystemExit) as stopped:
        outputs.refuse_existing(parser, {"--json": str(tmp_path / "new.json"), "--plot": str(tmp_path / "r.png")})
    assert stopped.value.code == 2
    assert f"--plot {tmp_path / 'r.png'} exists; not overwriting it" in capsys.readouterr().err
    assert (tmp_path / "r.png").read_text() == "keep"
