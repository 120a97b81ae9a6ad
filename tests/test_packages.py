"""Package fetchers against stand-in registry clients on PATH: the real code path, no network."""

import io
import shutil
import stat
import subprocess
import tarfile

import pytest

from synth.fonts.packages import PackageError, debian_package, npm_package


def _fake_client(bin_dir, name, body):
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def fake_bin(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return bin_dir


def test_npm_package_unpacks_once(tmp_path, fake_bin):
    tgz = tmp_path / "hand-1.0.0.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        data = b"font bytes"
        info = tarfile.TarInfo("package/files/hand.woff2")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    log = tmp_path / "calls.log"
    # npm pack NAME --loglevel=error --pack-destination DIR
    _fake_client(fake_bin, "npm", f'echo "$@" >> {log}\n'
                 f'[ "$2" = "hand@1.0.0" ] || {{ echo "npm error code E404" >&2; echo "npm error 404 Not Found - GET $2" >&2; exit 1; }}\n'
                 f'cp {tgz} "$5"\n')
    root = tmp_path / "cache"
    pkg = npm_package("hand", "1.0.0", root=root)
    assert (pkg / "files/hand.woff2").read_bytes() == b"font bytes"
    assert npm_package("hand", "1.0.0", root=root) == pkg
    assert len(log.read_text().splitlines()) == 1  # the second call did no network work
    with pytest.raises(PackageError, match=r"npm package nope@2.0 could not be fetched: 404 Not Found - GET nope@2.0"):
        npm_package("nope", "2.0", root=root)
    assert sorted(p.name for p in root.iterdir()) == ["hand@1.0.0"]  # nothing half-fetched left behind


@pytest.mark.skipif(not shutil.which("dpkg-deb"), reason="needs dpkg-deb to build a test .deb")
def test_debian_package_unpacks_and_reports_missing_versions(tmp_path, fake_bin):
    tree = tmp_path / "deb"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN/control").write_text("Package: fonts-hand\nVersion: 1.0-1\nArchitecture: all\n"
                                          "Maintainer: t <t@example.org>\nDescription: test\n")
    (tree / "usr/share/fonts").mkdir(parents=True)
    (tree / "usr/share/fonts/hand.ttf").write_bytes(b"ttf")
    deb = tmp_path / "fonts-hand_1.0-1_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(tree), str(deb)], check=True, capture_output=True)
    _fake_client(fake_bin, "apt-get", f'[ "$2" = "fonts-hand=1.0-1" ] && cp {deb} . && exit 0\n'
                 f'[ "$1" = "update" ] && exit 0\necho "E: Version for $2 was not found" >&2; exit 100\n')
    root = tmp_path / "cache"
    pkg = debian_package("fonts-hand", "1.0-1", root=root)
    assert (pkg / "usr/share/fonts/hand.ttf").read_bytes() == b"ttf"
    with pytest.raises(PackageError, match=r"fonts-hand=9.9 could not be fetched \(E: Version for fonts-hand=9.9 was not found\); .*apt-cache policy fonts-hand"):
        debian_package("fonts-hand", "9.9", root=root)
