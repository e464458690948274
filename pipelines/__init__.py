"""scikit-learn pipelines: augmented covariances, Riemannian classifiers, alignment,
deep-model wrappers (``pipelines.deep``, imported on demand: it loads torch), and the
registry that builds them from MOABB-format YAML."""

from .alignment import EuclideanAlignment, RiemannianRecentering, euclidean_alignment
from .augmented import AugmentedCovariances, augmented_covariances
from .riemann import RIEMANN_PIPELINES, make_riemann_pipeline
from .embedding import select_lag_ami, select_order_fnn
from .selection import AugmentedGridSearch

__all__ = [
    "AugmentedCovariances", "AugmentedGridSearch", "EuclideanAlignment", "RIEMANN_PIPELINES",
    "RiemannianRecentering", "augmented_covariances", "euclidean_alignment", "make_riemann_pipeline",
    "select_lag_ami", "select_order_fnn",
]  # fmt: skip
