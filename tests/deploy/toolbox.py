"""Runs inside .venv/deploy-tools (not the app's venv): Helm and kustomize through their Go
libraries, with JSON on stdout for the tests to read.

    python tests/deploy/toolbox.py render CHART RELEASE NAMESPACE [VALUES_FILE ...]
    python tests/deploy/toolbox.py lint CHART NAMESPACE KUBE_VERSION [VALUES_FILE ...]
    python tests/deploy/toolbox.py kustomize DIRECTORY
    python tests/deploy/toolbox.py values [VALUES_FILE ...]
    python tests/deploy/toolbox.py versions

Values files are merged in order, with Helm's own coalescing, exactly as `-f a.yaml -f b.yaml`.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import helm_python as helm  # type: ignore[import-not-found, unused-ignore]
import pykustomize  # type: ignore[import-not-found, unused-ignore]
import yaml


def _values(files: list[str]) -> dict[str, Any]:
    """Merge values files as Helm does: maps merge key by key, anything else is replaced."""

    def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
        merged = dict(base)
        for key, value in override.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = merge(merged[key], value)
            else:
                merged[key] = value
        return merged

    values: dict[str, Any] = {}
    for path in files:
        with open(path) as handle:
            values = merge(values, yaml.safe_load(handle) or {})
    return values


def _objects(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def render(chart: str, release: str, namespace: str, files: list[str]) -> dict[str, Any]:
    with helm.Chart.load(chart) as loaded:
        values = _values(files)
        # values.schema.json is enforced by Helm on install; enforce it here too.
        loaded.validate_schema(loaded.merge_values(values))
        manifests = loaded.render(values, name=release, namespace=namespace, is_install=True)
    objects: list[dict[str, Any]] = []
    for template, text in sorted(manifests.items()):
        if not template.endswith((".yaml", ".yml")):
            continue  # NOTES.txt
        objects.extend({"template": template, "object": obj} for obj in _objects(text))
    return {"manifests": manifests, "objects": objects}


def lint(chart: str, namespace: str, kube_version: str, files: list[str]) -> dict[str, Any]:
    report: dict[str, Any] = helm.lint(
        chart, _values(files), strict=True, namespace=namespace, kube_version=kube_version
    )
    return report


def kustomize(directory: str) -> dict[str, Any]:
    result = asyncio.run(pykustomize.build(directory))
    return {"yaml": result.yaml, "objects": _objects(result.yaml)}


def versions() -> dict[str, str]:
    return {
        "helm": helm.helm_sdk_version(),
        "helm-python-sdk": helm.__version__,
        "pykustomize": pykustomize.__version__,
        "kustomize-native": pykustomize.native_version(),
    }


def main(argv: list[str]) -> int:
    command, args = argv[0], argv[1:]
    if command == "render":
        out: Any = render(args[0], args[1], args[2], args[3:])
    elif command == "lint":
        out = lint(args[0], args[1], args[2], args[3:])
    elif command == "values":
        out = _values(args)
    elif command == "kustomize":
        out = kustomize(args[0])
    elif command == "versions":
        out = versions()
    else:
        print(f"unknown command {command}", file=sys.stderr)
        return 2
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
