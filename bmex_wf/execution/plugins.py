"""Nipype execution plugins for ``--use-plugin``: loading, per-node resources, SLURM jobs.

A plugin file is YAML with ``plugin:`` (a Nipype plugin name) and ``plugin_args:``, as in
fMRIPrep. For ``SLURM`` and ``SLURMGraph``, each node's ``mem_gb``/``n_procs`` hints become its
own ``--mem``/``--cpus-per-task`` (``node.plugin_args['sbatch_args']``), clamped to the largest
node of the partition (a job asking for more than any node has would pend forever), and the
GPU nodes ask for ``--gres=gpu:1`` only when ``--device cuda`` was requested. ``SLURMGraph``
submits every job at once and returns; :func:`run_with_plugin` then waits for the submitted
jobs and logs their ids and states.

Keys understood here and removed before Nipype sees ``plugin_args``:

``max_cpus``, ``max_mem_gb``
    Limits of one job (default: the largest node of the partition, from ``sinfo``).
``min_mem_gb``
    Smallest ``--mem`` of a job (default 1 GB: Nipype's default hint, 0.2 GB, is too small
    for a Python process, and a job without ``--mem`` may hold the whole node's memory).
"""

from __future__ import annotations

import logging
import math
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

LOGGER = logging.getLogger("bmex_wf.plugins")

#: Plugins that submit each node with ``sbatch``.
SLURM_PLUGINS = ("SLURM", "SLURMGraph")
#: Plugins whose workers are local processes, made to die with the run.
LOCAL_POOL_PLUGINS = ("MultiProc", "LegacyMultiProc")
#: plugin_args keys of bmex-wf (removed before Nipype sees them).
OWN_KEYS = ("max_cpus", "max_mem_gb", "min_mem_gb")
DEFAULT_MIN_MEM_GB = 1.0


def _is_str(value) -> bool:
    return isinstance(value, str)


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _positive_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


#: Checked plugin_args keys: key -> (check, what it must be).
_CHECKS = {
    "sbatch_args": (_is_str, "a string of sbatch options"),
    "template": (_is_str, "a batch-script header or a file name"),
    "n_procs": (_positive_int, "a positive integer"),
    "n_gpu_procs": (_positive_int, "a positive integer"),
    "memory_gb": (_positive_number, "a positive number"),
    "max_jobs": (_positive_int, "a positive integer"),
    "max_cpus": (_positive_int, "a positive integer"),
    "max_mem_gb": (_positive_number, "a positive number"),
    "min_mem_gb": (_positive_number, "a positive number"),
}
#: Final SLURM job states other than success.
FAILED_STATES = ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
                 "BOOT_FAIL", "DEADLINE", "REVOKED", "SPECIAL_EXIT")


class PluginError(ValueError):
    """A plugin file or a cluster query that cannot be used."""


@dataclass(frozen=True)
class NodeLimits:
    """What one job can get: CPUs and memory of the largest node of a partition."""

    cpus: int
    mem_gb: float
    source: str = "plugin_args"


# --------------------------------------------------------------------------- plugin files
def validate_plugin_args(plugin: str, args, origin: str = "plugin_args") -> dict:
    """Check the types of the known keys of ``args``; PluginError names ``origin``."""
    if not isinstance(args, dict):
        raise PluginError(f"{origin}: 'plugin_args' must be a mapping")
    for key, value in args.items():
        check, what = _CHECKS.get(key, (None, ""))
        if check is not None and not check(value):
            raise PluginError(f"{origin}: plugin_args.{key} must be {what}, got {value!r}")
    misplaced = [key for key in OWN_KEYS if key in args and plugin not in SLURM_PLUGINS]
    if misplaced:
        raise PluginError(f"{origin}: plugin_args.{misplaced[0]} applies to SLURM plugins only")
    return args


def load_plugin_file(path) -> tuple[str, dict]:
    """``(plugin, plugin_args)`` from a ``--use-plugin`` YAML file.

    Raises
    ------
    PluginError
        Unreadable YAML, no ``plugin:`` name, unknown Nipype plugin, or ill-typed arguments.
    """
    import yaml
    from nipype.pipeline import plugins

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PluginError(f"{path}: not a readable YAML file ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("plugin"), str):
        raise PluginError(f"{path}: expected 'plugin: <Nipype plugin name>' "
                          "(and optionally 'plugin_args: {...}')")
    unknown = set(data) - {"plugin", "plugin_args"}
    if unknown:
        raise PluginError(f"{path}: unknown entries {', '.join(sorted(unknown))} "
                          "(only 'plugin' and 'plugin_args')")
    plugin = data["plugin"]
    if not hasattr(plugins, f"{plugin}Plugin"):
        raise PluginError(f"{path}: unknown Nipype plugin {plugin!r}")
    args = data.get("plugin_args") or {}
    return plugin, dict(validate_plugin_args(plugin, args, str(path)))


def nipype_plugin_args(plugin: str, plugin_args: dict) -> dict:
    """``plugin_args`` as given to Nipype: own keys removed; SLURMGraph cancels orphans.

    With ``SLURMGraph`` a failed job would leave its dependents pending forever
    (``afterok`` never satisfied): ``--kill-on-invalid-dep=yes`` cancels them instead.
    """
    args = {k: v for k, v in plugin_args.items() if k not in OWN_KEYS}
    if plugin == "SLURMGraph" and "kill-on-invalid-dep" not in args.get("sbatch_args", ""):
        args["sbatch_args"] = f"{args.get('sbatch_args', '')} --kill-on-invalid-dep=yes".strip()
    return args


# --------------------------------------------------------------------------- partition limits
def partition_name(sbatch_args: str) -> str | None:
    """The partition named by ``-p``/``--partition`` in ``sbatch_args`` (last one wins)."""
    words, name = shlex.split(sbatch_args or ""), None
    for i, word in enumerate(words):
        if word in ("-p", "--partition") and i + 1 < len(words):
            name = words[i + 1]
        elif word.startswith("--partition="):
            name = word.split("=", 1)[1]
        elif word.startswith("-p") and len(word) > 2 and not word.startswith("--"):
            name = word[2:]
    return name


def query_partition_limits(partition: str | None = None, runner=subprocess.run) -> NodeLimits:
    """CPUs and memory of the largest node of ``partition`` (default partition if None).

    Reads ``sinfo -h -o '%c %m'`` (CPUs, memory in MB per node configuration).
    """
    cmd = ["sinfo", "-h", "-o", "%c %m"] + (["-p", partition] if partition else [])
    where = f"partition {partition}" if partition else "the default partition"
    try:
        done = runner(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PluginError(f"sinfo: cannot query {where} ({exc})") from None
    if done.returncode:
        raise PluginError(f"sinfo: cannot query {where}: {done.stderr.strip()}")
    sizes = []
    for line in done.stdout.split("\n"):
        fields = line.split()
        if len(fields) == 2:
            try:
                sizes.append((int(fields[0].rstrip("+")), float(fields[1].rstrip("+")) / 1024))
            except ValueError:
                continue
    if not sizes:
        raise PluginError(f"sinfo: no node found in {where}")
    return NodeLimits(cpus=max(c for c, _ in sizes), mem_gb=max(m for _, m in sizes),
                      source=f"sinfo ({where})")


def job_limits(plugin_args: dict, runner=subprocess.run) -> NodeLimits | None:
    """Limits of one job: ``max_cpus``/``max_mem_gb`` if both given, else asked to ``sinfo``.

    Returns None (no clamping, with a warning) when SLURM cannot be queried.
    """
    given = (plugin_args.get("max_cpus"), plugin_args.get("max_mem_gb"))
    if all(given):
        return NodeLimits(cpus=int(given[0]), mem_gb=float(given[1]))
    try:
        found = query_partition_limits(partition_name(plugin_args.get("sbatch_args", "")),
                                       runner)
    except PluginError as exc:
        LOGGER.warning("%s; per-node requests are not clamped", exc)
        return None
    return NodeLimits(cpus=int(given[0] or found.cpus), mem_gb=float(given[1] or found.mem_gb),
                      source=found.source)


# --------------------------------------------------------------------------- per-node requests
def node_request(mem_gb: float, n_procs: int, limits: NodeLimits | None = None, *,
                 min_mem_gb: float = DEFAULT_MIN_MEM_GB) -> tuple[int, int]:
    """``(cpus, mem_mb)`` asked for a node: its hints, floored, clamped to ``limits``."""
    cpus = max(1, int(n_procs or 1))
    mem_mb = math.ceil(max(float(mem_gb or 0), min_mem_gb) * 1024)
    if limits is not None:
        cpus = min(cpus, limits.cpus)
        mem_mb = min(mem_mb, int(limits.mem_gb * 1024))
    return cpus, mem_mb


def node_sbatch_args(cpus: int, mem_mb: int, gpu: bool = False) -> str:
    """sbatch options of one node's job."""
    return f"--cpus-per-task={cpus} --mem={mem_mb}M" + (" --gres=gpu:1" if gpu else "")


def apply_node_resources(workflow, plugin: str, plugin_args: dict, *, gpu: bool = False,
                         runner=subprocess.run) -> dict[str, str]:
    """Set each node's ``plugin_args['sbatch_args']`` from its resource hints.

    Parameters
    ----------
    workflow : nipype Workflow
        Every node of it (nested workflows included) is configured.
    plugin : str
        Nipype plugin name; nothing is changed unless it is a SLURM plugin.
    plugin_args : dict
        The plugin file's arguments (``sbatch_args``, ``max_cpus``, ``max_mem_gb``,
        ``min_mem_gb``).
    gpu : bool
        ``--device cuda`` was requested: nodes whose ``use_gpu`` input is on also ask for
        ``--gres=gpu:1``. Nothing here probes for a GPU.
    runner : callable
        ``subprocess.run`` stand-in (tests).

    Returns
    -------
    dict
        Node full name -> its own sbatch options.
    """
    if plugin not in SLURM_PLUGINS:
        return {}
    limits = job_limits(plugin_args, runner)
    if limits is not None:
        LOGGER.info("Jobs are limited to %d CPUs and %.1f GB (%s)", limits.cpus, limits.mem_gb,
                    limits.source)
    min_mem = float(plugin_args.get("min_mem_gb", DEFAULT_MIN_MEM_GB))
    requests = {}
    for node in workflow._get_all_nodes():
        cpus, mem_mb = node_request(node.mem_gb, node.n_procs, limits, min_mem_gb=min_mem)
        if limits is not None and (cpus < (node.n_procs or 1)
                                   or mem_mb < math.ceil(node.mem_gb * 1024)):
            LOGGER.warning("%s asks for %d CPUs and %.1f GB; clamped to %d CPUs and %.1f GB",
                           node.fullname, node.n_procs, node.mem_gb, cpus, mem_mb / 1024)
        own = node_sbatch_args(cpus, mem_mb, gpu and node.is_gpu_node())
        args = dict(node.plugin_args or {})
        kept = " ".join(w for w in shlex.split(args.get("sbatch_args", ""))
                        if not w.startswith(("--cpus-per-task=", "--mem=", "--gres=gpu")))
        # Nipype appends a node's sbatch_args to the plugin's: a leading space keeps them apart.
        args["sbatch_args"] = " " + " ".join(filter(None, (kept, own)))
        args.setdefault("overwrite", False)
        node.plugin_args = args
        requests[node.fullname] = own
    return requests


# --------------------------------------------------------------------------- running and waiting
def _squeue_jobs(batch_dir: Path, runner=subprocess.run) -> dict[str, tuple[str, str]]:
    """Jobs known to ``squeue`` whose batch script lies in ``batch_dir``: id -> (name, state)."""
    done = runner(["squeue", "-h", "-t", "all", "-o", "%i|%j|%T|%o"], capture_output=True,
                  text=True, timeout=60, check=False)
    if done.returncode:
        raise PluginError(f"squeue failed: {done.stderr.strip()}")
    jobs = {}
    for line in done.stdout.split("\n"):
        parts = line.split("|", 3)
        if len(parts) == 4 and Path(parts[3]).parent == batch_dir:
            jobs[parts[0]] = (parts[1], parts[2])
    return jobs


def wait_for_jobs(batch_dir, known=(), *, poll_s: float = 5.0, timeout_s: float | None = None,
                  runner=subprocess.run) -> dict[str, tuple[str, str]]:
    """Wait until every job submitted from ``batch_dir`` (ids not in ``known``) has ended.

    Returns id -> (job name, final state); a job gone from ``squeue`` before its end was seen
    is reported ``ENDED``. Raises TimeoutError after ``timeout_s`` seconds.
    """
    batch_dir, known = Path(batch_dir).absolute(), set(known)
    seen: dict[str, tuple[str, str]] = {}
    start = time.monotonic()
    while True:
        current = {i: v for i, v in _squeue_jobs(batch_dir, runner).items() if i not in known}
        for job_id in set(seen) - set(current):
            if seen[job_id][1] in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING"):
                seen[job_id] = (seen[job_id][0], "ENDED")
        seen.update(current)
        active = [i for i, (_, state) in seen.items()
                  if state in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED",
                               "REQUEUED", "RESIZING")]
        if not active:
            return seen
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise TimeoutError(f"{len(active)} SLURM jobs still active after {timeout_s:.0f} s: "
                               f"{', '.join(sorted(active, key=int))}")
        time.sleep(poll_s)


def run_with_plugin(workflow, plugin: str, plugin_args: dict, *, poll_s: float = 5.0,
                    runner=subprocess.run) -> dict[str, tuple[str, str]]:
    """Run ``workflow`` with a Nipype plugin; for ``SLURMGraph`` also wait for its jobs.

    ``MultiProc`` and ``LegacyMultiProc`` run with workers that die with this process
    (:mod:`bmex_wf.execution.orphans`), so that none is left computing after ``kill -9``.
    Returns the SLURM jobs of a ``SLURMGraph`` run (id -> (name, state); empty otherwise).
    Raises RuntimeError when some of them did not complete.
    """
    args = nipype_plugin_args(plugin, plugin_args)
    if plugin in LOCAL_POOL_PLUGINS:
        from ..execution.multiproc import guarded_plugin

        workflow.run(plugin=guarded_plugin(plugin, args), plugin_args=args)
        return {}
    if plugin != "SLURMGraph":
        workflow.run(plugin=plugin, plugin_args=args)
        return {}
    batch_dir = Path(workflow.base_dir) / workflow.name / "batch"
    known = set(_squeue_jobs(batch_dir.absolute(), runner))
    workflow.run(plugin=plugin, plugin_args=args)
    jobs = wait_for_jobs(batch_dir, known, poll_s=poll_s, runner=runner)
    for job_id, (name, state) in sorted(jobs.items(), key=lambda item: int(item[0])):
        LOGGER.info("SLURM job %s %s: %s", job_id, name, state)
    failed = {i: v for i, v in jobs.items() if v[1] != "COMPLETED" and v[1] != "ENDED"}
    LOGGER.info("SLURMGraph: %d jobs submitted, %d did not complete (job logs in %s)",
                len(jobs), len(failed), batch_dir)
    if failed:
        raise RuntimeError(f"{len(failed)} SLURM jobs did not complete: " + ", ".join(
            f"{i} {name} ({state})" for i, (name, state) in sorted(failed.items(),
                                                                   key=lambda x: int(x[0]))))
    return jobs
