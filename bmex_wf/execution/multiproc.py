"""Nipype's MultiProc and LegacyMultiProc plugins with workers that die with the run.

Each plugin is Nipype's own with one change: its pool runs :func:`.orphans.worker_initializer`
(Nipype's initializer, then the worker guard) in every worker. Nipype builds the pool in the
plugin's ``__init__``; it is replaced there by the same pool with the guarded initializer,
before any task is submitted. Options (``n_procs``, ``memory_gb``, ``mp_context``,
``maxtasksperchild``, ``raise_insufficient``, ...) keep their Nipype meaning.
"""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor

from nipype.pipeline.plugins import legacymultiproc, multiproc

from .orphans import LINUX, main_process, worker_initializer

#: Nipype plugin names run with guarded workers, and their classes here.
GUARDED = {}


class GuardedMultiProcPlugin(multiproc.MultiProcPlugin):
    """``MultiProc`` whose workers die with the run's main process (Linux)."""

    def __init__(self, plugin_args=None):
        super().__init__(plugin_args=plugin_args)
        if LINUX:
            self.pool.shutdown(wait=False)  # no worker has started yet
            self.pool = ProcessPoolExecutor(
                max_workers=self.processors, initializer=worker_initializer,
                initargs=(multiproc.process_initializer, self._cwd, *main_process()),
                mp_context=mp.get_context(self.plugin_args.get("mp_context")))


class GuardedLegacyMultiProcPlugin(legacymultiproc.LegacyMultiProcPlugin):
    """``LegacyMultiProc`` whose workers die with the run's main process (Linux)."""

    def __init__(self, plugin_args=None):
        super().__init__(plugin_args=plugin_args)
        if LINUX:
            pool_class = type(self.pool)
            self.pool.terminate()
            self.pool.join()
            self.pool = pool_class(
                processes=self.processors,
                maxtasksperchild=self.plugin_args.get("maxtasksperchild", 10),
                initializer=worker_initializer,
                initargs=(legacymultiproc.process_initializer, self._cwd, *main_process()))


GUARDED.update(MultiProc=GuardedMultiProcPlugin, LegacyMultiProc=GuardedLegacyMultiProcPlugin)


def guarded_plugin(plugin: str, plugin_args: dict):
    """A plugin instance for ``plugin`` (``MultiProc`` or ``LegacyMultiProc``) with guarded workers."""
    return GUARDED[plugin](plugin_args=plugin_args)
