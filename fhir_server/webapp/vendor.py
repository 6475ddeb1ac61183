"""`python -m fhir_server.webapp.vendor`: copy the app's third-party files (vendor.json) from
their npm packages into static/vendor, so the app runs offline from the server with no CDN and
no build step.

Only the packages the files come from are fetched (`npm pack name@version`, no dependency
tree: the files are prebuilt), each checked against the `integrity` package-lock.json records
for it before it is unpacked into node_modules/. The browser tests take axe-core the same way.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
VENDOR_DIR = HERE / "static" / "vendor"
MODULES = HERE / "node_modules"


def vendored_files() -> dict[str, str]:
    """node_modules path → file name under static/vendor."""
    return dict(orjson.loads((HERE / "vendor.json").read_bytes())["files"])


def locked(package: str) -> tuple[str, str]:
    """The version and integrity (`sha512-…`) package-lock.json pins for a top-level package."""
    entry = orjson.loads((HERE / "package-lock.json").read_bytes())["packages"][f"node_modules/{package}"]
    return entry["version"], entry["integrity"]


def install(packages: tuple[str, ...] = (), npm: str | None = None) -> Path:
    """node_modules/ with the vendored files' packages (and `packages`) at their locked versions."""
    wanted = {source.split("/", 1)[0] for source in vendored_files()} | set(packages)
    for package in sorted(wanted):
        version, integrity = locked(package)
        found = MODULES / package / "package.json"
        if found.exists() and orjson.loads(found.read_bytes()).get("version") == version:
            continue
        _unpack(package, version, integrity, npm or shutil.which("npm") or "npm")
    return MODULES


def _unpack(package: str, version: str, integrity: str, npm: str) -> None:
    with tempfile.TemporaryDirectory() as work:
        done = subprocess.run([npm, "pack", f"{package}@{version}", "--pack-destination", work, "--silent"],
                              capture_output=True, text=True, timeout=300, check=True)
        tarball = Path(work) / done.stdout.strip().splitlines()[-1]
        algorithm, _, expected = integrity.partition("-")
        actual = base64.b64encode(hashlib.new(algorithm, tarball.read_bytes()).digest()).decode()
        if actual != expected:
            raise RuntimeError(f"{package}@{version}: the tarball does not match package-lock.json's integrity")
        target = MODULES / package
        shutil.rmtree(target, ignore_errors=True)
        with tarfile.open(tarball) as archive:
            for member in archive.getmembers():
                if not member.isfile() or not member.name.startswith("package/") or ".." in Path(member.name).parts:
                    continue
                path = target / member.name[len("package/"):]
                path.parent.mkdir(parents=True, exist_ok=True)
                source = archive.extractfile(member)
                assert source is not None
                path.write_bytes(source.read())


def main() -> int:
    modules = install()
    VENDOR_DIR.mkdir(parents=True, exist_ok=True)
    for source, name in vendored_files().items():
        shutil.copyfile(modules / source, VENDOR_DIR / name)
        print(f"{source} -> static/vendor/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
