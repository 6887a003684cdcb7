"""The operator's own configuration, on top of the shared :class:`taskforge.config.Settings`.

The operator watches one namespace: ``TASKFORGE_OPERATOR_NAMESPACE``, or, in a pod, the
namespace of its service account.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from taskforge.config import ConfigError

NAMESPACE_VARIABLE = "TASKFORGE_OPERATOR_NAMESPACE"
POD_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class OperatorSettings:
    namespace: str


def load_operator_settings(
    environ: Mapping[str, str] | None = None, namespace_file: Path = POD_NAMESPACE_FILE
) -> OperatorSettings:
    """Read the operator's variables; raise :class:`ConfigError` naming the bad one."""
    environ = os.environ if environ is None else environ
    namespace = environ.get(NAMESPACE_VARIABLE, "").strip()
    source = NAMESPACE_VARIABLE
    if not namespace:
        try:
            namespace = namespace_file.read_text().strip()
            source = str(namespace_file)
        except OSError:
            raise ConfigError(
                f"{NAMESPACE_VARIABLE} is not set and {namespace_file} is not readable "
                "(not in a pod); set it to the namespace holding the worker Deployments"
            ) from None
    if not _DNS_LABEL.match(namespace):
        raise ConfigError(f"{source}={namespace!r} is invalid: not a Kubernetes namespace name")
    return OperatorSettings(namespace=namespace)
