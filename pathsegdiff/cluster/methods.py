"""The two ways to turn standardised pixels into a map: streaming k-means and NMF concepts (scikit-learn).

Both see pixels (n, C) standardised per channel, are fitted by ``partial_fit``
on one batch of tiles at a time (memory bounded by the batch, whatever the
store's size), and assign every pixel to one of ``k`` ids.

- ``kmeans``: ``MiniBatchKMeans``; k-means++ initialisation on the first batch
  (fewer than ``k`` pixels wait for the next); a pixel's id is its nearest
  centroid; the squared error is its squared distance to that centroid.
- ``nmf``: ``MiniBatchNMF`` needs non-negative input, and a standardised
  channel is signed.  Each standardised channel z is split into its positive
  and negative parts, ``[max(z, 0), max(-z, 0)]`` (2C channels, nothing lost:
  z is their difference).  A pixel's id is the concept with the largest
  contribution ``w_k * ||H_k||``; the squared error is the reconstruction
  error ``||x - w H||^2``.  A concept's direction in the standardised space
  is ``H_k[:C] - H_k[C:]``.
"""

from __future__ import annotations

import numpy as np

from pathsegdiff.errors import InputError, MissingDependencyError


def _sklearn():
    try:
        import sklearn.cluster
        import sklearn.decomposition
    except ImportError as e:
        raise MissingDependencyError("scikit-learn", "cluster", "pathsegdiff cluster") from e
    return sklearn


class Method:
    """A map method: ``fit_batch`` (pixels), ``finish``, ``assign`` -> (ids, squared errors) per pixel."""

    def __init__(self, k: int, seed: int):
        self.k, self.seed = k, seed
        self.pending: list[np.ndarray] = []
        self.started = False
        self.seen = 0

    def fit_batch(self, x: np.ndarray) -> None:
        """Fit on (n, C) pixels; the first fit waits until it has at least ``k`` pixels."""
        self.seen += len(x)
        if not self.started:
            self.pending.append(x)
            if sum(len(p) for p in self.pending) < self.k:
                return
            x, self.pending = np.concatenate(self.pending), []
            self.started = True
        self._partial_fit(x)

    def finish(self) -> None:
        if not self.started:
            raise InputError(f"only {self.seen} pixels to fit {self.k} clusters; lower -k or raise --fit-pixels")

    def _partial_fit(self, x: np.ndarray) -> None:
        raise NotImplementedError

    def assign(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def centroids(self) -> np.ndarray:
        """(k, C) in the standardised space."""
        raise NotImplementedError

    def saved(self) -> dict[str, np.ndarray]:
        """Arrays beside the centroids that :meth:`assign` needs (NMF's components)."""
        return {}


class KMeansMap(Method):
    name = "kmeans"

    def __init__(self, k: int, seed: int):
        super().__init__(k, seed)
        self.model = _sklearn().cluster.MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=1,
                                                         compute_labels=False)

    def _partial_fit(self, x: np.ndarray) -> None:
        self.model.partial_fit(x)

    def assign(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = self.model.cluster_centers_.astype(np.float32)
        d2 = (x**2).sum(1, keepdims=True) - 2 * x @ c.T + (c**2).sum(1)[None]  # (n, k)
        ids = d2.argmin(1)
        return ids.astype(np.uint8), np.maximum(d2[np.arange(len(x)), ids], 0)

    def centroids(self) -> np.ndarray:
        return self.model.cluster_centers_.astype(np.float32)


def signed_split(x: np.ndarray) -> np.ndarray:
    """(n, C) signed -> (n, 2C) non-negative: positive parts, then negative parts."""
    return np.concatenate([np.maximum(x, 0), np.maximum(-x, 0)], 1)


class NMFMap(Method):
    name = "nmf"

    def __init__(self, k: int, seed: int):
        super().__init__(k, seed)
        self.model = _sklearn().decomposition.MiniBatchNMF(n_components=k, random_state=seed, init="nndsvda",
                                                           max_iter=200)

    def _partial_fit(self, x: np.ndarray) -> None:
        self.model.partial_fit(signed_split(x))

    def assign(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        xs = signed_split(x)
        h = self.model.components_.astype(np.float32)  # (k, 2C)
        w = self.model.transform(xs).astype(np.float32)  # (n, k)
        ids = (w * np.linalg.norm(h, axis=1)[None]).argmax(1)
        return ids.astype(np.uint8), ((xs - w @ h) ** 2).sum(1)

    def centroids(self) -> np.ndarray:
        h = self.model.components_.astype(np.float32)
        c = h.shape[1] // 2
        return h[:, :c] - h[:, c:]

    def saved(self) -> dict[str, np.ndarray]:
        return {"components": self.model.components_.astype(np.float32)}


def make_method(name: str, k: int, seed: int) -> Method:
    """The map method ``name`` (``kmeans`` or ``nmf``); one line naming the extra when scikit-learn is missing."""
    return {"kmeans": KMeansMap, "nmf": NMFMap}[name](k, seed)
