"""The web client's third-party files (KaTeX, highlight.js, and axe-core for the browser tests) are
exactly what tools/vendor-web.sh fetched at the pinned versions: every file in the vendor folders
has its sha256 in tools/vendor-web.sha256 and matches it, the pinned npm tarballs are the
versions the script names, and each library carries its licence."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
SCRIPT = ROOT / "tools" / "vendor-web.sh"
SUMS = ROOT / "tools" / "vendor-web.sha256"
WEB_VENDOR = ROOT / "services" / "gateway" / "parley_gateway" / "web" / "vendor"
TEST_VENDOR = ROOT / "tests" / "browser" / "vendor"


def pinned() -> dict[str, str]:
    """path -> sha256, as tools/vendor-web.sha256 lists them (`npm/…` are the tarballs)."""
    sums = {}
    for line in SUMS.read_text().splitlines():
        digest, path = line.split("  ", 1)
        assert re.fullmatch(r"[0-9a-f]{64}", digest), line
        sums[path] = digest
    return sums


def test_every_vendored_file_is_pinned_and_unchanged() -> None:
    files = {k: v for k, v in pinned().items() if not k.startswith("npm/")}
    on_disk = {path.relative_to(ROOT).as_posix() for folder in (WEB_VENDOR, TEST_VENDOR) for path in folder.rglob("*")}
    on_disk = {path for path in on_disk if (ROOT / path).is_file()}
    assert on_disk == set(files), "tools/vendor-web.sh --update lists a new or removed file"
    changed = [
        path for path, digest in files.items() if hashlib.sha256((ROOT / path).read_bytes()).hexdigest() != digest
    ]
    assert changed == [], "edited by hand? run tools/vendor-web.sh to restore the pinned files"


def test_the_pinned_tarballs_are_the_versions_the_script_fetches() -> None:
    packages = re.search(r"^PACKAGES=\((.*)\)$", SCRIPT.read_text(), re.MULTILINE)
    assert packages is not None
    # npm pack names @scope/name@1.2.3 "scope-name-1.2.3.tgz"
    tarballs = {
        "npm/" + spec.lstrip("@").rsplit("@", 1)[0].replace("/", "-") + "-" + spec.rsplit("@", 1)[1] + ".tgz"
        for spec in packages.group(1).split()
    }
    assert tarballs == {path for path in pinned() if path.startswith("npm/")}
    assert len(tarballs) == 3


def test_each_vendored_library_carries_its_licence() -> None:
    for library in (WEB_VENDOR / "katex", WEB_VENDOR / "highlight", TEST_VENDOR / "axe-core"):
        assert (library / "LICENSE").stat().st_size > 500, library
