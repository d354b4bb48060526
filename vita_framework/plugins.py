"""``python -m vita_framework.plugins [--json]``: the loaded plugins, their versions, modalities and components.

The plugin manager itself is :mod:`vita_framework.plugin_manager`; this module only lists what it loaded.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from .errors import VitaError
from .plugin_manager import get_plugins


def listing() -> list[dict[str, Any]]:
    """One row per plugin: package, version, where it came from, its modalities and components."""
    loaded = get_plugins()
    rows = []
    for info in loaded.plugins.values():
        rows.append({
            "plugin": info.name, "package": info.package, "version": info.version, "source": info.source,
            "modalities": list(info.modalities),
            "components": [
                {"kind": kind, "name": name, "description": loaded.registry.get(kind, name).description}
                for kind, name in info.components
            ],
        })
    return rows


def modality_listing() -> list[dict[str, Any]]:
    """One row per modality: what a user types and which encoder kind serves it, and who provides it."""
    return [{"name": e.modality.name, "marker": e.modality.marker, "request_key": e.modality.request_key,
             "encoder": e.modality.encoder, "stream": e.modality.stream, "plugin": e.plugin, "package": e.package,
             "description": e.modality.description}
            for e in get_plugins().modalities.entries()]


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [("PLUGIN", "PACKAGE", "VERSION", "KIND", "COMPONENT", "DESCRIPTION")]
    for row in rows:
        comps = row["components"] + [{"kind": "modality", "name": m, "description": ""} for m in row["modalities"]]
        comps = comps or [{"kind": "-", "name": "-", "description": ""}]
        for i, comp in enumerate(comps):
            head = (row["plugin"], row["package"], row["version"]) if i == 0 else ("", "", "")
            lines.append((*head, comp["kind"], comp["name"], comp["description"]))
    return _columns(lines)


def format_modalities(rows: list[dict[str, Any]]) -> str:
    lines = [("MODALITY", "MARKER", "REQUEST KEY", "ENCODER", "PACKAGE", "DESCRIPTION")]
    lines += [(r["name"], r["marker"], r["request_key"], r["encoder"], r["package"], r["description"]) for r in rows]
    return _columns(lines)


def _columns(lines: list[tuple[str, ...]]) -> str:
    """Left-aligned columns; the last column is not padded."""
    widths = [max(len(line[c]) for line in lines) for c in range(len(lines[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(widths[c]) for c, cell in enumerate(line[:-1])) + "  " + line[-1]
        for line in lines
    ).rstrip()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        rows, modalities = listing(), modality_listing()
    except VitaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if "--json" in argv:
        print(json.dumps({"plugins": rows, "modalities": modalities, "problems": get_plugins().problems}, indent=2))
    else:
        print(format_modalities(modalities) + "\n\n" + format_table(rows))
        for problem in get_plugins().problems:
            print(f"warning: {problem}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
