"""Build hook: the wheel carries Envoy's bootstrap template (envoy/bootstrap.yaml, kept at the
repository root where the Dockerfile, compose and Kubernetes manifests name it) as
``infery/envoy/bootstrap.yaml``, so `infery up` / `infery bootstrap` work from an install.
Everything else about the package is in pyproject.toml."""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
BOOTSTRAP = Path("envoy") / "bootstrap.yaml"


class BuildPyWithBootstrap(build_py):  # type: ignore[misc]
    def run(self) -> None:
        super().run()
        if not self.editable_mode:  # an editable install reads envoy/bootstrap.yaml in place
            target = Path(self.build_lib) / "infery" / "envoy" / "bootstrap.yaml"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / BOOTSTRAP, target)


setup(cmdclass={"build_py": BuildPyWithBootstrap})
