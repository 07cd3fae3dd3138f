"""faasd.archive: handler archives are unpacked safely, hostile ones refused."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from faasd.archive import extract_archive
from faasd.errors import InvalidRequest

Entry = tuple[str, str, bytes | str, int]
"""(name, kind: file|dir|symlink|hardlink|fifo|chr|blk, data or link target, mode)."""


def build(*entries: Entry, compress: bool = True) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if compress else "w") as tar:
        for name, kind, payload, mode in entries:
            info = tarfile.TarInfo(name)
            info.mode = mode
            data = None
            if kind == "file":
                assert isinstance(payload, bytes)
                info.size = len(payload)
                data = io.BytesIO(payload)
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, str(payload)
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, str(payload)
            else:
                info.type = {"fifo": tarfile.FIFOTYPE, "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE}[kind]
            tar.addfile(info, data)
    return buffer.getvalue()


def file(name: str, data: bytes = b"x", mode: int = 0o644) -> Entry:
    return (name, "file", data, mode)


def directory(name: str, mode: int = 0o755) -> Entry:
    return (name, "dir", b"", mode)


def symlink(name: str, target: str) -> Entry:
    return (name, "symlink", target, 0o777)


def hardlink(name: str, target: str) -> Entry:
    return (name, "hardlink", target, 0o644)


def tree(root: Path) -> dict[str, str]:
    """Relative path -> description, for comparing what was written."""
    found = {}
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        if path.is_symlink():
            found[relative] = f"-> {os.readlink(path)}"
        elif path.is_dir():
            found[relative] = f"dir {stat.S_IMODE(path.stat().st_mode):o}"
        else:
            found[relative] = f"{path.read_bytes()!r} {stat.S_IMODE(path.stat().st_mode):o}"
    return found


def test_a_normal_archive_is_unpacked(tmp_path: Path) -> None:
    data = build(
        directory("./"),
        file("./handler.sh", b"#!/bin/sh\necho hi\n", 0o755),
        directory("lib"),
        file("lib/util.py", b"x = 1\n"),
        file("deep/er/file.txt", b"auto parents"),  # No directory entries: created on the way.
        symlink("lib/link.py", "util.py"),
        symlink("deep/er/up.sh", "../../handler.sh"),
        hardlink("copy.txt", "deep/er/file.txt"),
    )
    result = extract_archive(data, str(tmp_path))
    assert tree(tmp_path) == {
        "copy.txt": "b'auto parents' 644",
        "deep": "dir 755",
        "deep/er": "dir 755",
        "deep/er/file.txt": "b'auto parents' 644",
        "deep/er/up.sh": "-> ../../handler.sh",
        "handler.sh": "b'#!/bin/sh\\necho hi\\n' 755",
        "lib": "dir 755",
        "lib/link.py": "-> util.py",
        "lib/util.py": "b'x = 1\\n' 644",
    }
    assert (result.files, result.directories, result.links, result.bytes) == (3, 1, 3, 36)


def test_plain_tar_is_accepted(tmp_path: Path) -> None:
    extract_archive(build(file("a.txt", b"plain"), compress=False), str(tmp_path))
    assert (tmp_path / "a.txt").read_bytes() == b"plain"


def test_modes_are_made_sane(tmp_path: Path) -> None:
    data = build(
        file("setuid", b"s", 0o4777),
        file("private", b"p", 0o000),
        file("group-exec", b"g", 0o010),
        directory("locked", 0o000),
        file("locked/inside", b"i", 0o600),
    )
    extract_archive(data, str(tmp_path))
    modes = {name: stat.S_IMODE((tmp_path / name).stat().st_mode) for name in ("setuid", "private", "group-exec")}
    assert modes == {"setuid": 0o755, "private": 0o644, "group-exec": 0o755}
    assert stat.S_IMODE((tmp_path / "locked").stat().st_mode) == 0o755
    assert (tmp_path / "locked" / "inside").read_bytes() == b"i"


def test_a_duplicate_member_replaces_the_earlier_one(tmp_path: Path) -> None:
    extract_archive(build(file("a", b"one"), file("a", b"two")), str(tmp_path))
    assert (tmp_path / "a").read_bytes() == b"two"


@pytest.mark.parametrize(
    ("entries", "reason"),
    [
        ([file("/etc/evil")], "absolute path"),
        ([file("../evil")], "'..'"),
        ([file("a/../../evil")], "'..'"),
        ([file("a/b/../../../evil")], "'..'"),
        ([symlink("link", "/etc/passwd")], "absolute path"),
        ([symlink("link", "../outside")], "outside"),
        ([symlink("a/link", "../../outside")], "outside"),
        ([symlink("self", "."), symlink("escape", "self/..")], "'..' after a name"),
        ([symlink("dir", "."), file("dir/../evil")], "'..'"),
        ([directory("sub"), symlink("out", "sub"), file("out/file")], "symbolic link"),
        ([symlink("tmp", "sub"), directory("tmp/x")], "symbolic link"),
        ([hardlink("h", "/etc/passwd")], "hard link"),
        ([hardlink("h", "../outside")], "hard link"),
        ([hardlink("h", "not-in-archive")], "hard link"),
        ([symlink("l", "x"), hardlink("h", "l")], "hard link"),
        ([("pipe", "fifo", b"", 0o644)], "FIFO"),
        ([("null", "chr", b"", 0o644)], "character device"),
        ([("disk", "blk", b"", 0o644)], "block device"),
        ([file(".secrets/api-key")], "reserved"),
        ([directory(".secrets")], "reserved"),
        ([symlink(".secrets", "/tmp")], "reserved"),
        ([file("a"), file("a/b")], "needs a directory"),
        ([directory("d"), file("d")], "would replace a directory"),
        ([file("..")], "'..'"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_hostile_archives_are_refused(tmp_path: Path, entries: list[Entry], reason: str) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    outside_before = sorted(p.name for p in tmp_path.iterdir())
    data = build(*entries)
    with pytest.raises(InvalidRequest) as caught:
        extract_archive(data, str(dest), reserved=(".secrets",))
    assert reason in caught.value.message
    assert caught.value.message.startswith("handlerArchive")
    assert sorted(p.name for p in tmp_path.iterdir()) == outside_before  # Nothing written outside.


def test_a_symlink_chain_cannot_be_used_to_write_outside(tmp_path: Path) -> None:
    """a -> b (inside), then b/../x or a/evil: never written through a link."""
    dest = tmp_path / "dest"
    dest.mkdir()
    (tmp_path / "outside").mkdir()
    data = build(directory("b"), symlink("a", "b"), file("a/evil"))
    with pytest.raises(InvalidRequest, match="symbolic link"):
        extract_archive(data, str(dest))
    assert not (dest / "b" / "evil").exists()


def test_existing_symlink_leaf_is_replaced_not_followed(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    target = tmp_path / "target.txt"
    target.write_bytes(b"untouched")
    os.symlink("../target.txt", dest / "leaf")  # As if an earlier archive had been lax.
    extract_archive(build(file("leaf", b"new")), str(dest))
    assert target.read_bytes() == b"untouched"
    assert not (dest / "leaf").is_symlink() and (dest / "leaf").read_bytes() == b"new"


@pytest.mark.parametrize(
    "data",
    [b"", b"not an archive at all", gzip.compress(b"gzip but no tar inside" * 100), build(file("a"))[:40]],
    ids=["empty", "garbage", "gzip-not-tar", "truncated"],
)
def test_unreadable_archives_are_refused(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(InvalidRequest, match="handlerArchive"):
        extract_archive(data, str(tmp_path))


def test_size_and_member_bounds(tmp_path: Path) -> None:
    bomb = build(file("big", b"\0" * 100_000))
    assert len(bomb) < 1000
    (tmp_path / "a").mkdir()
    with pytest.raises(InvalidRequest, match="more than 50000 bytes"):
        extract_archive(bomb, str(tmp_path / "a"), max_bytes=50_000)
    many = build(*(file(f"f{number}") for number in range(20)))
    (tmp_path / "b").mkdir()
    with pytest.raises(InvalidRequest, match="more than 10 entries"):
        extract_archive(many, str(tmp_path / "b"), max_members=10)
    (tmp_path / "c").mkdir()
    assert extract_archive(many, str(tmp_path / "c"), max_members=20).files == 20
