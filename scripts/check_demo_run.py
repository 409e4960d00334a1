"""Check a finished ``bmex-wf demo`` run: exit 0, no ERROR line, no crash file, every output.

    python scripts/check_demo_run.py DEMO_DIR LOG_FILE EXIT_CODE

Prints one line per problem and exits 1 when there is any (used by ``.ci/run`` after the
README's install).
"""

from __future__ import annotations

import csv
import logging
import sys
from pathlib import Path

LOGGER = logging.getLogger("check_demo_run")


def problems(demo_dir: Path, log_text: str, exit_code: int) -> list[str]:
    """What is wrong with the demo run in ``demo_dir`` (empty when nothing is)."""
    found = []
    derivatives = demo_dir / "derivatives"
    if exit_code != 0:
        found.append(f"bmex-wf demo exited with {exit_code}")
    errors = [line for line in log_text.splitlines() if " ERROR" in line or line.startswith("ERROR")]
    found += [f"ERROR line in the log: {line.strip()}" for line in errors[:5]]
    found += [f"crash file: {path}" for path in sorted(derivatives.glob("logs/crash-*"))]
    anat = derivatives / "sub-01" / "anat"
    for pattern in ("*_desc-enhanced_T1w.nii.gz", "*_desc-enhancedbrain_T1w.nii.gz",
                    "*_desc-brain_mask.nii.gz", "*_dseg.nii.gz", "*_label-WM_probseg.nii.gz"):
        if not list(anat.glob(pattern)):
            found.append(f"missing output {anat / pattern}")
    tables = list(anat.glob("*_desc-volumes_morph.tsv"))
    if not tables:
        found.append(f"missing tissue-volume table in {anat}")
    else:
        with open(tables[0], newline="") as handle:
            methods = {row.get("method", "") for row in csv.DictReader(handle, delimiter="\t")}
        if not any("atropos" in m.lower() for m in methods):
            found.append(f"{tables[0]} has no Atropos rows (methods: {sorted(methods)})")
    if not (derivatives / "sub-01.html").is_file():
        found.append(f"missing report {derivatives / 'sub-01.html'}")
    return found


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    demo_dir, log_file, code = (argv or sys.argv[1:])[:3]
    found = problems(Path(demo_dir), Path(log_file).read_text(errors="replace"), int(code))
    for problem in found:
        LOGGER.error("demo check: %s", problem)
    if not found:
        LOGGER.info("demo check: exit 0, no ERROR line, no crash file, every output present")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
