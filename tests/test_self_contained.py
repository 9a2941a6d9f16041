"""A clone of the repository alone, with no sibling folders, is enough to run the suite: nothing in
it reads a path outside the checkout (the conformance material is vendored, see
simulators/conformance/data/PROVENANCE.md)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def tracked_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.decode()
    return [name for name in out.split("\0") if name and (REPO / name).is_file()]


def copy_repository(target: Path) -> Path:
    for name in tracked_files():
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target / name)
    return target


def test_a_lone_copy_collects_and_validates(tmp_path):
    alone = tmp_path / "lone"  # tmp_path holds nothing else: no ../shared, no siblings at all
    copy_repository(alone)
    env = {
        **os.environ,
        "HOME": str(tmp_path / "home"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.pop("INFERY_CONFORMANCE_DIR", None)
    env.pop("PYTHONPATH", None)
    # One run collects the whole suite and runs the validators alone (-k): a module that fails to
    # collect is an error that fails the run (exit 2). Asserts are left plain: rewriting them is
    # pytest's own work, done to every module by the real run, and it was a third of this run's
    # CPU; what is proven here is where the copy reads from, not how pytest reports a failure.
    run = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--assert=plain"]
    checked = subprocess.run(
        [*run, "-x", "-k", "test_conformance_checks"],
        cwd=alone,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr[-3000:]
    summary = checked.stdout.strip().splitlines()[-1]
    # The validators ran; the rest was collected without an error and deselected.
    found = re.fullmatch(r"(\d+) passed, (\d+) deselected(, \d+ warnings?)? in .*", summary)
    assert found and int(found[1]) > 0 and int(found[2]) > int(found[1]), summary
    # The validators read their vendored data from the copy, not from this checkout.
    assert (tmp_path / "cache" / "infery-conformance").is_dir()  # the copy's spec was parsed and cached


def test_no_tracked_file_reaches_outside_the_checkout():
    offenders = []
    markers = ("../shared", '"shared" / "conformance"', "/work/shared")
    for name in tracked_files():
        if name == "tests/test_self_contained.py":  # the markers themselves
            continue
        if name.endswith((".py", ".toml", ".yaml", ".yml", "Makefile", "Dockerfile", ".cfg", ".ini", "run")):
            text = (REPO / name).read_text(errors="replace")
            if any(marker in text for marker in markers):
                offenders.append(name)
    assert offenders == []
