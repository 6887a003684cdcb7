"""services/Dockerfile: multi-stage, wheels only in the final stage, non-root, ``taskforge``."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import pytest

from tests.chart.conftest import ROOT

DOCKERFILE = ROOT / "services" / "Dockerfile"
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|build-essential|make|clang|libc6-dev|python3-dev)\b")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, instruction: str) -> list[str]:
        return [args for name, args in self.instructions if name == instruction]

    def last(self, instruction: str) -> str:
        found = self.all(instruction)
        assert found, f"stage {self.name or self.base} has no {instruction}"
        return found[-1]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages) of a Dockerfile: continuations joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            words = rest.split()
            words = [w for w in words if not w.startswith("--")]
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m[1], m[0]), words[0])
            name = words[2] if len(words) > 2 and words[1].upper() == "AS" else None
            stages.append(Stage(base=base, name=name))
        elif not stages and instruction == "ARG":
            key, _, default = rest.partition("=")
            args[key.strip()] = default.strip()
        else:
            stages[-1].instructions.append((instruction, rest.strip()))
    return args, stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse(DOCKERFILE.read_text())[1]


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def test_multi_stage_on_slim_python_3_11(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    for stage in stages:
        assert re.fullmatch(r"python:3\.11-slim(-\w+)?", stage.base), stage.base


def test_first_stage_builds_wheels_of_the_project(stages: list[Stage]) -> None:
    build = stages[0]
    copied = " ".join(build.all("COPY"))
    for path in ["pyproject.toml", "README.md", "services", "proto"]:
        assert path in copied
    assert any("pip wheel . -w /wheels" in run for run in build.all("RUN"))


def test_final_stage_installs_wheels_only_without_build_tools(final: Stage) -> None:
    runs = final.all("RUN")
    installs = [run for run in runs if "pip install" in run]
    assert installs and all("--no-index" in run and "/wheels" in run for run in installs)
    for name, args in final.instructions:
        assert not BUILD_TOOLS.search(args), f"{name} {args}"
    assert not any("apt-get install" in run for run in runs)


def test_final_stage_runs_as_a_numeric_non_root_user(final: Stage) -> None:
    user = final.last("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, user
    assert not gid or (gid.isdigit() and int(gid) != 0), user
    assert uid == "10001", "the chart's securityContext runs as 10001"


def test_entrypoint_is_taskforge_and_api_is_the_default_command(final: Stage) -> None:
    assert json.loads(final.last("ENTRYPOINT")) == ["taskforge"]
    assert json.loads(final.last("CMD")) == ["api"]
    exposed = " ".join(final.all("EXPOSE")).split()
    assert {"8080", "9090"} <= set(exposed)


def test_dockerignore_keeps_the_context_to_what_the_image_needs() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "an allowlist: everything out unless named"
    for path in ["!pyproject.toml", "!README.md", "!services/", "!proto/"]:
        assert path in lines
    assert "**/__pycache__" in lines
