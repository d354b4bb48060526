"""Test distributions: a ``<name>-<version>.dist-info`` (METADATA + entry_points.txt) beside plugin modules in
a site directory, which importlib.metadata and the plugin manager find exactly as after ``pip install``."""

from __future__ import annotations

from pathlib import Path

HEADER = "from dataclasses import dataclass\nfrom vita_framework.hookspecs import hookimpl\n"


def make_dist(site: Path, dist: str, version: str, plugins: dict[str, str]) -> None:
    """Install ``dist`` into ``site``: entry point ``<ep> = <ep>_plugin`` for each ep name -> module source."""
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(
        "[vita_framework]\n" + "".join(f"{ep} = {ep}_plugin\n" for ep in plugins)
    )
    for ep, source in plugins.items():
        (site / f"{ep}_plugin.py").write_text(source)
