"""Batch units on a Dask distributed cluster (the optional ``cluster`` extra; see docs/cluster.md).

The client keeps the semantics of the plain batch: it plans the units, it alone writes the journal
and assembles the jobs; workers only protect a unit and rename its output into the job's partial
folder (:func:`unit.run_unit`). Dask is imported only when a cluster is asked for.
"""

from salm_desktop.core.cluster.spec import ClusterError, ClusterSpec, parse_cluster_spec
from salm_desktop.core.threads import parse_threads, pinned_threads

__all__ = ["ClusterError", "ClusterSpec", "parse_cluster_spec", "parse_threads", "pinned_threads", "open_cluster"]


def open_cluster(spec: "str | ClusterSpec", **kwargs):
    """Start or connect to the cluster and run every check before any unit starts (see executor.py)."""
    from salm_desktop.core.cluster.executor import open_cluster as _open

    return _open(spec, **kwargs)
