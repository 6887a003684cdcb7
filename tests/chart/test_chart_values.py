"""values.yaml is documented and valid; values.schema.json rejects what cannot work."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import yaml

from tests.chart.conftest import CHART, HelmError, Render

VALUES = CHART / "values.yaml"
SCHEMA = CHART / "values.schema.json"
KEY = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z0-9_.-]+):(?P<rest>.*)$")


def test_values_yaml_points_editors_at_the_schema() -> None:
    first = VALUES.read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=values.schema.json"


def test_defaults_and_ci_values_satisfy_the_schema() -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    defaults = yaml.safe_load(VALUES.read_text())
    jsonschema.validate(defaults, schema)
    for path in sorted((CHART / "ci").glob("*-values.yaml")):
        merged = _merge(defaults, yaml.safe_load(path.read_text()) or {})
        jsonschema.validate(merged, schema)


def _merge(base: dict[str, object], override: dict[str, object]) -> dict[str, object]:
    merged = dict(base)
    for key, value in override.items():
        current = merged.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            merged[key] = _merge(current, value)
        else:
            merged[key] = value
    return merged


def test_every_value_has_a_helm_docs_comment() -> None:
    """A key is documented by a `# --` comment above it, or is a group of documented keys."""
    lines = VALUES.read_text().splitlines()
    undocumented = []
    skip_deeper_than: int | None = None
    for number, line in enumerate(lines):
        match = KEY.match(line)
        if not match or line.lstrip().startswith("#"):
            continue
        indent = len(match["indent"])
        if skip_deeper_than is not None:
            if indent > skip_deeper_than:
                continue
            skip_deeper_than = None
        if _has_doc_comment(lines, number):
            skip_deeper_than = indent
        elif match["rest"].strip() == "" and _children_are_keys(lines, number, indent):
            continue
        else:
            undocumented.append(f"line {number + 1}: {line.strip()}")
    assert not undocumented, "values without a `# --` comment:\n" + "\n".join(undocumented)


def _has_doc_comment(lines: list[str], number: int) -> bool:
    above = number - 1
    while above >= 0 and lines[above].lstrip().startswith("#"):
        if lines[above].lstrip().startswith("# --"):
            return True
        above -= 1
    return False


def _children_are_keys(lines: list[str], number: int, indent: int) -> bool:
    for line in lines[number + 1 :]:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = KEY.match(line)
        return bool(match) and len(match["indent"]) > indent and not line.lstrip().startswith("-")
    return False


@pytest.mark.parametrize(
    ("sets", "complaint"),
    [
        ({"worker.autoscaling.mode": "bogus"}, "mode"),
        ({"api.replicas": -1}, "replicas"),
        ({"worker.replicas": -3}, "replicas"),
        ({"worker.autoscaling.maxReplicas": 0}, "maxReplicas"),
        ({"worker.concurrency": 0}, "concurrency"),
        ({"worker.queues": "{bad queue}"}, "queues"),
        ({"apiTokens.digests": "{plaintext-token}"}, "digests"),
        ({"postgres.existingSecret": ""}, "existingSecret"),
        ({"config.logLevel": "verbose"}, "logLevel"),
        ({"config.jobTimeout": "soon"}, "jobTimeout"),
        ({"image.pullPolicy": "Sometimes"}, "pullPolicy"),
        ({"api.replica": 3}, "replica"),
    ],
    ids=lambda value: (
        "-".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else None
    ),
)
def test_schema_rejects_bad_values(render: Render, sets: dict[str, object], complaint: str) -> None:
    with pytest.raises(HelmError, match="schema") as raised:
        render(sets=sets)
    assert complaint in str(raised.value)
