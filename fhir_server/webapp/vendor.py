"""`python -m fhir_server.webapp.vendor`: copy the app's third-party files (vendor.json) from
node_modules (installed by `npm ci` from package-lock.json) into static/vendor, so the app runs
offline from the server with no CDN and no build step."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
VENDOR_DIR = HERE / "static" / "vendor"


def vendored_files() -> dict[str, str]:
    """node_modules path → file name under static/vendor."""
    return dict(orjson.loads((HERE / "vendor.json").read_bytes())["files"])


def install(npm: str = "npm") -> Path:
    """`npm ci` (the locked versions) unless node_modules is already there; its folder."""
    modules = HERE / "node_modules"
    if not all((modules / source).exists() for source in vendored_files()):
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=HERE, check=True,
                       capture_output=True, timeout=600)
    return modules


def main() -> int:
    modules = install(shutil.which("npm") or "npm")
    VENDOR_DIR.mkdir(parents=True, exist_ok=True)
    for source, name in vendored_files().items():
        shutil.copyfile(modules / source, VENDOR_DIR / name)
        print(f"{source} -> static/vendor/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
