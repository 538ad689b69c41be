"""trainkit.files: the one atomic, no-follow write, and bounded reads."""

from __future__ import annotations

import os

import pytest

from trainkit.errors import RunDirError
from trainkit.files import (
    atomic_folder,
    atomic_path,
    read_regular,
    write_bytes_atomic,
    write_text_atomic,
)


def test_a_path_writer_writes_through_a_fresh_private_name_and_a_link_at_the_target_is_replaced(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / "model.keras").symlink_to(victim)
    with atomic_path(tmp_path / "model.keras") as tmp:
        assert tmp.name == "model.keras" and tmp.parent != tmp_path  # the extension kept, another folder
        tmp.write_text("new\n")
    assert victim.read_text() == "precious\n"
    assert not (tmp_path / "model.keras").is_symlink() and (tmp_path / "model.keras").read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras", "victim.txt"]


def test_a_failed_writer_leaves_the_old_file_and_no_scratch(tmp_path):
    (tmp_path / "out.csv").write_text("old\n")
    with pytest.raises(OSError), atomic_path(tmp_path / "out.csv") as tmp:
        tmp.write_text("half")
        raise OSError("disk full")
    assert (tmp_path / "out.csv").read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_a_folder_is_replaced_whole(tmp_path):
    (tmp_path / "saved_model").mkdir()
    (tmp_path / "saved_model" / "old.pb").write_text("old")
    with atomic_folder(tmp_path / "saved_model") as scratch:
        (scratch / "new.pb").write_text("new")
    assert [p.name for p in (tmp_path / "saved_model").iterdir()] == ["new.pb"]
    assert [p.name for p in tmp_path.iterdir()] == ["saved_model"]


def test_a_linked_folder_inside_the_run_directory_is_refused(tmp_path):
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    run.mkdir()
    elsewhere.mkdir()
    (run / "export-final").symlink_to(elsewhere)
    for write in (
        lambda: write_text_atomic(run / "export-final" / "export.json", "{}", within=run),
        lambda: write_bytes_atomic(run / "export-final" / "model.tflite", b"x", within=run),
    ):
        with pytest.raises(RunDirError, match="symbolic link"):
            write()
    assert not os.listdir(elsewhere)


def test_reads_refuse_links_and_large_files(tmp_path):
    (tmp_path / "big").write_bytes(b"x" * 2048)
    (tmp_path / "link").symlink_to(tmp_path / "big")
    assert read_regular(tmp_path / "big") == b"x" * 2048
    with pytest.raises(ValueError, match="larger than 1 KiB"):
        read_regular(tmp_path / "big", limit=1024)
    with pytest.raises(OSError):
        read_regular(tmp_path / "link")
    os.mkfifo(tmp_path / "fifo")  # refused at once: opening or reading it would wait for a writer
    with pytest.raises(OSError, match="not a regular file"):
        read_regular(tmp_path / "fifo")


def test_writers_of_one_file_at_once_each_rename_a_whole_file_of_their_own(tmp_path):
    # A sweep's worker processes all write its sweep.json: with one shared temporary
    # name, one writer's rename took away the file another was still writing.
    import json
    import threading

    from trainkit.files import write_json_atomic

    target, failures = tmp_path / "sweep.json", []

    def writer(n: int) -> None:
        try:
            for i in range(300):
                write_json_atomic(target, {"writer": n, "i": i, "pad": "x" * 2000})
        except OSError as err:
            failures.append(err)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[:3]
    assert json.loads(target.read_text())["i"] == 299  # whole: some writer's last
    assert [p.name for p in tmp_path.iterdir()] == ["sweep.json"]  # no temporary file left
