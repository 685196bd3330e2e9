"""Unsupervised concept maps from stored features (k-means or NMF): no model, no labels.

``cluster_stores(STORES, OUT, ClusterConfig(k=3))`` is what
``pathsegdiff cluster`` runs; ``docs/cluster.md`` describes the outputs.
It reads stores only through ``pathsegdiff.store`` and draws with
``predict``'s overlay and GeoJSON writers.
"""

from pathsegdiff.cluster.config import METHODS, ClusterConfig
from pathsegdiff.cluster.run import CLUSTER_OUTPUT, cluster_stores, summary_line

__all__ = ["CLUSTER_OUTPUT", "METHODS", "ClusterConfig", "cluster_stores", "summary_line"]
