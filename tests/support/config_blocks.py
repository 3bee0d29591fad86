"""Variants shipped as commented-out blocks in config files, read back as YAML for tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def uncommented_blocks(path: Path, first_line: str) -> list[dict[str, Any]]:
    """The YAML of each commented-out block: a line ``# first_line`` and its indented lines."""
    lines = path.read_text().splitlines()
    blocks = []
    for start, line in enumerate(lines):
        if line.strip() != f"# {first_line}":
            continue
        prefix = line[: line.index("#")]
        block = [line.replace("# ", "", 1)]
        for following in lines[start + 1 :]:
            if following.strip() == "#":
                block.append("")
            elif following.startswith(prefix + "#   "):
                block.append(following.replace("# ", "", 1))
            else:
                break
        blocks.append(yaml.safe_load("\n".join(block)))
    return blocks
