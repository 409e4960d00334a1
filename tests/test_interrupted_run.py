"""A run killed with ``kill -9`` leaves no worker behind; its rerun resumes and gives the same outputs.

Small scale: the participant level runs in a child process with the stand-in ``init_bmex_wf``
of ``test_bids_app`` (MultiProc, forkserver); its enhancement step sleeps while a flag file
exists, so the run is killed mid-enhancement.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nb
import numpy as np

from bmex_wf.bids.derivatives import derivative_names

CHILD = r'''
import sys
sys.path.insert(0, {root!r})
from tests import test_bids_app as t
from bmex_wf.workflows import participant
from bmex_wf.cli import reporting

sys.modules["bmex_wf.workflows.base"] = t._fake_base_module(t._fake_init_bmex_wf())
participant._add_reports = lambda *a: None
participant._add_volumes = lambda *a: None
reporting.subject_reports = lambda cfg, subjects: {{}}
if __name__ == "__main__":  # the forkserver imports this file again: run once
    from bmex_wf.cli.run import main
    sys.exit(main(sys.argv[1:]))
'''


def _dataset(root: Path) -> Path:
    anat = root / "sub-01" / "anat"
    anat.mkdir(parents=True)
    data = np.random.default_rng(0).integers(1, 100, (6, 7, 8)).astype("int16")
    nb.Nifti1Image(data, np.diag([6.0, 6.0, 6.0, 1.0])).to_filename(anat / "sub-01_T1w.nii.gz")
    (root / "dataset_description.json").write_text('{"Name": "one", "BIDSVersion": "1.9.0"}')
    (root / "participants.tsv").write_text("participant_id\tage\nsub-01\t30\n")
    (root / "participants.json").write_text('{"age": {"Units": "months"}}')
    return root


def _start(tmp_path, bids, out, work, flags):
    models = tmp_path / "models"
    models.mkdir(exist_ok=True)
    (models / "BMEX-Month24-T1-model.pt").write_bytes(b"stand-in")
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(root=str(Path(__file__).resolve().parents[1])))
    argv = [sys.executable, str(script), str(bids), str(out), "participant", "-w", str(work),
            "--models-dir", str(models), "--nprocs", "2", "--omp-nthreads", "1", "--device", "cpu"]
    log = open(tmp_path / f"{out.name}.log", "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "NIPYPE_NO_ET": "1", "BMEX_TEST_FLAGS": str(flags)})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split()[2] == "Z")


def _outputs(out: Path) -> dict:
    folder = out / "sub-01" / "anat"
    return {name: np.asarray(nb.load(folder / name).dataobj)
            for name in derivative_names("sub-01_T1w.nii.gz", "T1w").values()}


def test_kill_9_then_rerun(tmp_path):
    bids = _dataset(tmp_path / "bids")
    flags = tmp_path / "flags"
    flags.mkdir()
    (flags / "sleep").write_text("")
    out, work = tmp_path / "out", tmp_path / "work"
    run = _start(tmp_path, bids, out, work, flags)
    try:
        deadline = time.monotonic() + 120
        while not (flags / "worker.pid").is_file() and time.monotonic() < deadline:
            assert run.poll() is None, (tmp_path / "out.log").read_text()[-3000:]
            time.sleep(0.2)
        worker = int((flags / "worker.pid").read_text())
    finally:
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
    deadline = time.monotonic() + 30
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _alive(worker), "a worker of the killed run is still alive 30 s later"
    assert not list(out.rglob("*_desc-enhanced_T1w.nii.gz")), "the killed run left an output"

    (flags / "sleep").unlink()
    rerun = _start(tmp_path, bids, out, work, flags)
    assert rerun.wait(timeout=300) == 0
    clean_out = tmp_path / "clean_out"
    clean = _start(tmp_path, bids, clean_out, tmp_path / "clean_work", flags)
    assert clean.wait(timeout=300) == 0
    resumed, fresh = _outputs(out), _outputs(clean_out)
    assert all(np.array_equal(resumed[k], fresh[k]) for k in fresh)
