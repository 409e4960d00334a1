"""``bmex-wf models``: which model files are present, for every age group and contrast."""

from __future__ import annotations

import argparse
import sys

from ..models import registry


def _row(name, entry, path):
    size = f"{path.stat().st_size / 1e6:.1f} MB" if path else "-"
    return [name, entry.file, "found" if path else "missing", size,
            registry.checksum_status(entry, path), str(path.parent) if path else "-"]


def models_table(models_dir=None) -> list[list[str]]:
    """Rows of the ``models`` table: one per age group x contrast, then LifespanStrip."""
    rows = []
    for entry in registry.enhance_entries():
        rows.append(_row(f"{entry.group} {entry.contrast}", entry,
                         registry.find_file(entry.file, models_dir)))
    strip = registry.skullstrip_entry()
    strip_path = registry.find_file(strip.file, models_dir)
    rows.append(_row("LifespanStrip", strip, strip_path))
    # Its intensity template must sit beside the checkpoint (header + data).
    folders = [strip_path.parent] if strip_path else registry.search_dirs(models_dir)
    tpl = next((f / strip.template for f in folders
                if (f / strip.template).is_file() and (f / strip.template_data).is_file()), None)
    rows.append(["LifespanStrip template", f"{strip.template} + {strip.template_data}",
                 "found" if tpl else "missing", "-", "-", str(tpl.parent) if tpl else "-"])
    builtin = registry.builtin_model_path()
    rows.append(["Built-in (all groups)", registry.BUILTIN_FILE, "found" if builtin else "missing",
                 f"{builtin.stat().st_size / 1e6:.1f} MB" if builtin else "-", "package data",
                 str(builtin.parent) if builtin else "-"])
    return rows


def format_table(rows, header=("model", "file", "status", "size", "checksum", "directory")) -> str:
    """Plain-text table with aligned columns."""
    rows = [list(header)] + rows
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bmex-wf models",
        description="List the BME-X model files bmex-wf can find, for every age group and "
        "contrast. Directories are searched in order: --models-dir, $BMEX_MODELS_DIR, "
        f"then the user cache ({registry.user_cache_dir()}).",
    )
    parser.add_argument("--models-dir", metavar="DIR", help="directory holding model files")
    return parser


def main(argv=None) -> int:
    opts = get_parser().parse_args(argv)
    rows = models_table(opts.models_dir)
    dirs = ", ".join(str(d) for d in registry.search_dirs(opts.models_dir))
    sys.stdout.write(f"Searched: {dirs}\n{format_table(rows)}\n")
    found = sum(r[2] == "found" for r in rows[:-1])
    sys.stdout.write(f"{found} of {len(rows) - 1} official files found.\n")
    if registry.official_files_present(opts.models_dir):
        pass
    elif registry.builtin_model_path():
        sys.stdout.write("No official enhancement weights found: the built-in compact model "
                         "(not the published BME-X weights) will be used.\n")
    else:
        sys.stdout.write("No enhancement weights found at all: see the README, 'Model weights'.\n")
    return 0
