"""bmex-wf on a real single-node SLURM cluster (Nipype's SLURMGraph plugin, job arrays).

The test starts munged, slurmctld and slurmd itself with ``scripts/slurm/start.sh`` (needs
Debian's ``slurm-wlm`` and ``munge``, and root), runs the BIDS App on two subjects of the shared
dataset (central crops, width-8 rule-weight networks) through SLURM, and checks the outputs
against a MultiProc run. The daemons it started are stopped by pid afterwards.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest

from .helpers import shared_path

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts" / "slurm"
SUBJECTS = {"0002": "T1w", "0009": "T2w"}
CROP = 64
#: Seconds one bmex-wf run may take before its jobs are cancelled and the test fails.
RUN_TIMEOUT = 1500


# --------------------------------------------------------------------------- the cluster
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def _slurm_env(conf: Path, **extra) -> dict:
    env = dict(os.environ, SLURM_CONF=str(conf), NIPYPE_NO_ET="1", **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), env.get("PYTHONPATH"))))
    return env


def _alive(pid_file: Path) -> int | None:
    """Pid of a running daemon from its pid file."""
    try:
        pid = int(pid_file.read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


@pytest.fixture(scope="module")
def cluster():
    """A running single-node cluster: its state folder (slurm.conf, logs, pid files)."""
    missing = [exe for exe in ("munged", "slurmctld", "slurmd", "sbatch", "sinfo", "sacct")
               if shutil.which(exe) is None]
    if missing:
        pytest.skip(f"SLURM is not installed ({', '.join(missing)} not found; "
                    "apt-get install -y slurm-wlm munge)")
    if os.geteuid() != 0:
        pytest.skip("the single-node test cluster runs its daemons as root (SlurmUser=root)")
    # Short path: the munge socket name must fit a Unix socket address.
    state = Path(tempfile.mkdtemp(prefix="bmex-slurm-"))
    env = dict(os.environ, SLURMCTLD_PORT=str(_free_port()), SLURMD_PORT=str(_free_port()))
    try:
        started = subprocess.run(["bash", str(SCRIPTS / "start.sh"), str(state), "120"],
                                 capture_output=True, text=True, timeout=240, env=env,
                                 check=False)
        assert started.returncode == 0, f"SLURM did not start:\n{started.stderr[-3000:]}"
        assert started.stdout.strip() == f"export SLURM_CONF={state / 'slurm.conf'}"
        yield state
    finally:
        conf = state / "slurm.conf"
        if _alive(state / "run" / "slurmctld.pid"):
            subprocess.run(["scancel", "--user", "root"], env=_slurm_env(conf),
                           capture_output=True, timeout=60, check=False)
        pids = [_alive(state / "run" / f"{d}.pid") for d in ("slurmd", "slurmctld", "munged")]
        subprocess.run(["bash", str(SCRIPTS / "stop.sh"), str(state)], timeout=120, check=False)
        still = [pid for pid in pids if pid is not None and _pid_running(pid)]
        shutil.rmtree(state, ignore_errors=True)
        assert not still, f"daemons still running after stop.sh: {still}"


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _completion_records(state: Path) -> dict[str, dict]:
    """Job id -> fields, from ``sacct --completion`` (the cluster's job completion log)."""
    done = subprocess.run(["sacct", "-c", "-n", "-P", "-o", "jobid,jobname,state"],
                          env=_slurm_env(state / "slurm.conf"), capture_output=True, text=True,
                          timeout=60, check=True)
    records = {}
    for line in done.stdout.splitlines():
        job_id, name, job_state = line.split("|")[:3]
        records[job_id] = {"name": name, "state": job_state}
    # Requested resources ("Tres=cpu=1,mem=4G,node=1") and array task ids ("ArrayJobId=81
    # ArrayTaskId=0") are only in the completion file itself.
    for line in (state / "log" / "jobcomp.txt").read_text().splitlines():
        fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
        if fields.get("JobId") in records:
            records[fields["JobId"]].update(tres=fields.get("Tres", ""),
                                            array=fields.get("ArrayJobId"),
                                            task=fields.get("ArrayTaskId"))
    return records


# --------------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def crop_bids(tmp_path_factory):
    """Two subjects of the shared dataset (tables and sidecars kept), images cropped."""
    source = shared_path("data", "test_BIDS")
    root = tmp_path_factory.mktemp("bids")
    shutil.copy(source / "dataset_description.json", root)
    for label in SUBJECTS:
        for path in (source / f"sub-{label}").rglob("*"):
            target = root / path.relative_to(source)
            if path.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            elif path.name.endswith(".nii.gz"):
                img = nb.load(path)
                corner = [max(0, (n - CROP) // 2) for n in img.shape[:3]]
                img.slicer[tuple(slice(c, c + CROP) for c in corner)].to_filename(target)
            else:
                shutil.copy(path, target)
    return root


def _app(state: Path, args: list[str], log: Path) -> str:
    """Run ``bmex-wf`` in a subprocess (own log); on timeout cancel every job and fail."""
    cmd = [sys.executable, "-m", "bmex_wf.cli.run", *args]
    env = _slurm_env(state / "slurm.conf")
    with open(log, "w") as handle:
        try:
            done = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env,
                                  timeout=RUN_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            subprocess.run(["scancel", "--user", "root"], env=env, timeout=60, check=False)
            pytest.fail(f"bmex-wf did not finish in {RUN_TIMEOUT} s; log: {log}")
    text = log.read_text()
    assert done.returncode == 0, f"bmex-wf exited {done.returncode}:\n{text[-4000:]}"
    return text


def _tree(root: Path) -> dict[str, Path]:
    """Output files by relative path, run records (``logs/``) excluded."""
    return {p.relative_to(root).as_posix(): p for p in root.rglob("*")
            if p.is_file() and p.relative_to(root).parts[0] != "logs"}


# --------------------------------------------------------------------------- tests
def test_slurmgraph_matches_multiproc(cluster, crop_bids, small_models, tmp_path):
    common = ["participant", "--models-dir", str(small_models), "--device", "cpu",
              "--brain-mask-source", "nonzero", "--skip-bids-validation",
              "--omp-nthreads", "1", "--nprocs", "2"]
    graph = tmp_path / "slurmgraph.yml"
    graph.write_text("plugin: SLURMGraph\nplugin_args:\n  sbatch_args: --time=00:20:00\n")
    out_sg = tmp_path / "out-slurm"
    start = time.monotonic()
    log = _app(cluster, [str(crop_bids), str(out_sg), *common, "-w", str(tmp_path / "work-slurm"),
                         "--use-plugin", str(graph)], tmp_path / "slurm.log")
    slurm_s = time.monotonic() - start

    # Every node ran as a SLURM job, all completed, as the cluster's own records say.
    jobs = re.findall(r"SLURM job (\d+) (\S+): (\S+)", log)
    assert len(jobs) >= 2 * 10, log[-3000:]
    records = _completion_records(cluster)
    for job_id, name, state in jobs:
        assert state == "COMPLETED" and records[job_id]["state"] == "COMPLETED", (job_id, name)
        assert records[job_id]["name"] == name
    # Per-node requests reached sbatch: the enhancement jobs asked for their 4 GB.
    enhance = [records[i]["tres"] for i, name, _ in jobs if name.endswith("_enhance")]
    assert len(enhance) == len(SUBJECTS) and all("mem=4G" in t for t in enhance), enhance
    others = [records[i]["tres"] for i, name, _ in jobs if name.endswith("_validate")]
    assert others and all("mem=1G" in t and "cpu=1" in t for t in others), others
    assert "--gres" not in (tmp_path / "work-slurm" / "bmex_participant_wf" / "batch" /
                            "submit_jobs.sh").read_text()

    multiproc = tmp_path / "multiproc.yml"
    multiproc.write_text("plugin: MultiProc\nplugin_args: {n_procs: 2}\n")
    out_mp = tmp_path / "out-multiproc"
    start = time.monotonic()
    _app(cluster, [str(crop_bids), str(out_mp), *common, "-w", str(tmp_path / "work-mp"),
                   "--use-plugin", str(multiproc)], tmp_path / "multiproc.log")
    print(f"SLURMGraph run {slurm_s:.0f} s ({len(jobs)} jobs), "
          f"MultiProc run {time.monotonic() - start:.0f} s")

    slurm_files, mp_files = _tree(out_sg), _tree(out_mp)
    assert sorted(slurm_files) == sorted(mp_files)
    images = [rel for rel in slurm_files if rel.endswith(".nii.gz")]
    assert len(images) == 7 * len(SUBJECTS), images
    for rel in images:
        a, b = nb.load(slurm_files[rel]), nb.load(mp_files[rel])
        assert a.shape == b.shape and np.allclose(a.affine, b.affine), rel
        x, y = np.asarray(a.dataobj, dtype="float64"), np.asarray(b.dataobj, dtype="float64")
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(y).max()),
                                   err_msg=rel)
    for rel in (r for r in slurm_files if r.endswith(".json") and "/anat/" in r):
        a, b = (json.loads(f[rel].read_text()) for f in (slurm_files, mp_files))
        assert a.keys() == b.keys(), rel
        if "QI" in a:
            assert a["QI"] == pytest.approx(b["QI"], rel=1e-5), rel


def test_array_job_recipe(cluster, crop_bids, small_models, tmp_path):
    """One array task per subject, one derivatives folder; shared files created once."""
    out, work = tmp_path / "out", tmp_path / "work"
    env = _slurm_env(cluster / "slurm.conf", SUBJECTS=" ".join(SUBJECTS), GROUP_LEVEL="0",
                     BMEX_WF=f"{sys.executable} -m bmex_wf.cli.run", WORK_ROOT=str(work),
                     SBATCH_ARGS="--time=00:10:00 --cpus-per-task=1 --mem=2G")
    submitted = subprocess.run(
        ["bash", str(SCRIPTS / "array-job.sh"), str(crop_bids), str(out), "--models-dir",
         str(small_models), "--device", "cpu", "--skip-bids-validation", "--boilerplate-only"],
        env=env, capture_output=True, text=True, timeout=120, check=False)
    assert submitted.returncode == 0, submitted.stderr
    array = re.search(r"array job (\d+)", submitted.stdout).group(1)
    deadline = time.monotonic() + 600
    while True:
        queued = subprocess.run(["squeue", "-h", "-j", array, "-o", "%T"], env=env,
                                capture_output=True, text=True, timeout=60, check=False)
        if not {s for s in queued.stdout.split() if s not in ("COMPLETED", "FAILED",
                                                               "CANCELLED", "TIMEOUT")}:
            break
        assert time.monotonic() < deadline, f"array job {array} did not end in 600 s"
        time.sleep(3)
    tasks = {r["task"]: r["state"] for r in _completion_records(cluster).values()
             if r["name"] == "bmex-wf" and r["array"] == array}
    logs = {t: (out / "logs" / "slurm" / f"{array}_{t}.out").read_text() for t in tasks}
    assert sorted(tasks) == ["0", "1"], tasks
    assert set(tasks.values()) == {"COMPLETED"}, logs
    assert [f"sub-{s}" in logs[str(n)] for n, s in enumerate(SUBJECTS)] == [True, True]
    assert sorted(p.name for p in work.iterdir()) == [f"sub-{s}" for s in SUBJECTS]
    assert all((work / f"sub-{s}" / "config.toml").is_file() for s in SUBJECTS)
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative"
    assert "bmex-wf" in (out / "logs" / "CITATION.md").read_text()
    assert len(list((out / "logs").glob("config-*.toml"))) == len(SUBJECTS)
    assert not [p for p in out.rglob(".*.tmp")], "temporary files left behind"
