"""Check the import-linter contracts of pyproject.toml: `python -m tests.lint_imports`
(what `make test` runs; extra arguments go to lint-imports).

import-linter finds a package by walking its folder, and the checkout's folders
are the package `sluice` only through the editable install's mapping (app/ is
`sluice`, worker/ is `sluice.worker`...), which it cannot follow. So this lays
the installed layout out as symbolic links in a temporary directory, first on
the path, and runs lint-imports on it: the same contracts, on the same files.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def lay_out(into: Path, extra: Mapping[str, str] = {}) -> Path:
    """The package as a wheel would hold it, as links under `into`; `extra` adds
    files (path -> text) without touching the checkout. Answers the path entry."""
    folders = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"
    ]
    for package, folder in sorted(folders.items()):
        target = into.joinpath(*package.split("."))
        if target.parent != into:
            _unfold(target.parent)
        target.mkdir(parents=True)
        for entry in (ROOT / folder).iterdir():
            if entry.name != "__pycache__" and not (target / entry.name).exists():
                (target / entry.name).symlink_to(entry)
    for path, text in extra.items():
        file = into / path
        _unfold(file.parent)
        file.write_text(text)
    return into


def _unfold(folder: Path) -> None:
    """Make `folder` (and its parents) real directories of links, so a file can be
    added to it without writing into the checkout."""
    if folder.is_symlink():
        _unfold(folder.parent)
        source = folder.resolve()
        folder.unlink()
        folder.mkdir()
        for entry in source.iterdir():
            if entry.name != "__pycache__":
                (folder / entry.name).symlink_to(entry)
    elif not folder.exists():
        _unfold(folder.parent)
        folder.mkdir()


def lint(*args: str, extra: Mapping[str, str] = {}) -> subprocess.CompletedProcess[str]:
    """Run lint-imports on the laid-out package; its exit status and report."""
    with tempfile.TemporaryDirectory(prefix="sluice-layers-") as tmp:
        path = lay_out(Path(tmp), extra)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(path), str(ROOT)])}
        command = [str(Path(sys.executable).parent / "lint-imports"), "--no-cache", *args]
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)


if __name__ == "__main__":
    done = lint(*sys.argv[1:])
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    sys.exit(done.returncode)
