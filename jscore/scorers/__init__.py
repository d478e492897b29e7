"""The scores and their registry.

Every score is a pure, jit-compiled function following one contract (see docs/scorers.md):
`value = name(features_or_source_probs, labels, *, num_classes, sample_mask=None, ...)`, higher
is better. `REGISTRY` records, for each score, what it needs, its natural range, its paper and
its hyper-parameters.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Tuple

from jscore.scorers.etran import etran_combine, etran_energy, etran_lda
from jscore.scorers.gbc import gbc, gbc_from_stats
from jscore.scorers.hscore import hscore, hscore_from_stats
from jscore.scorers.knn import knn, knn_from_stats
from jscore.scorers.leep import leep
from jscore.scorers.logme import logme, logme_from_stats, logme_regression
from jscore.scorers.nce import nce, nce_from_stats
from jscore.scorers.ncti import ncti_combine, ncti_ncc, ncti_seli, ncti_terms, ncti_vc
from jscore.scorers.nleep import MAX_ITERS as NLEEP_MAX_ITERS
from jscore.scorers.nleep import fit_gmm, gmm_log_posteriors, nleep, nleep_from_stats
from jscore.scorers.pactran import pac_dirichlet, pac_gamma, pactran
from jscore.scorers.parc import parc, parc_from_stats
from jscore.scorers.reg_hscore import reg_hscore, reg_hscore_from_stats
from jscore.scorers.sfda import sfda
from jscore.scorers.tmi import tmi, tmi_from_stats
from jscore.scorers.transrate import transrate, transrate_from_stats
from jscore.validate import validate_inputs


class ScoreSpec(NamedTuple):
    """One registry entry.

    needs: "features" (features [N, D]) or "source" (source probabilities [N, Cs]).
    range: (low, high) natural bounds, None where unbounded; "C-1" means num_classes - 1.
    hyperparams: keyword defaults the function accepts.
    min_per_class: samples each present class needs.
    components: for a score defined relative to a set of models (ETran's and NCTI's min-max
      combinations), the per-model registry entries it combines; empty otherwise.
    combine: for such a score, `combine(*component_arrays [M]) -> [M]`; `fn` is then None.
      Only `score_zoo` computes these; `score` returns their components instead.
    version: the version of jscore's implementation: bumped when a change alters the values the
      score gives on the same input (a study's records carry it, so older values are recomputed).
      Version 1 is implicit in records written before versions existed.
    """

    name: str
    fn: Callable
    needs: str
    range: Tuple[Optional[object], Optional[object]]
    paper: str
    hyperparams: dict
    min_per_class: int
    components: tuple = ()
    combine: Optional[Callable] = None
    version: int = 1

    @property
    def relative(self) -> bool:
        """True for scores defined relative to a set of models (computed by `score_zoo` only)."""
        return self.combine is not None


REGISTRY = {
    "hscore": ScoreSpec("hscore", hscore, "features", (0.0, "C-1"),
                        "Bao et al., An Information-theoretic Approach to Transferability in Task "
                        "Transfer Learning, ICIP 2019", {"rcond": None}, 1),
    "reg_hscore": ScoreSpec("reg_hscore", reg_hscore, "features", (0.0, "C-1"),
                            "Ibrahim et al., Newer is not always better: Rethinking transferability "
                            "metrics, their peculiarities, stability and performance, NeurIPS 2021",
                            {}, 1),
    "nce": ScoreSpec("nce", nce, "source", (None, 0.0),
                     "Tran et al., Transferability and Hardness of Supervised Classification Tasks, "
                     "ICCV 2019", {}, 1),
    "leep": ScoreSpec("leep", leep, "source", (None, 0.0),
                      "Nguyen et al., LEEP: A New Measure to Evaluate Transferability of Learned "
                      "Representations, ICML 2020", {}, 1),
    "nleep": ScoreSpec("nleep", nleep, "features", (None, 0.0),
                       "Li et al., Ranking Neural Checkpoints, CVPR 2021",
                       {"variance": 0.8, "components_per_class": 5, "max_iters": NLEEP_MAX_ITERS, "tol": 1e-3,
                        "reg_covar": 1e-6, "max_dims": None, "kmeans_iters": 10}, 2,
                       version=2),  # 2: EM budget 100 -> 30 iterations (docs/performance.md)
    "logme": ScoreSpec("logme", logme, "features", (None, None),
                       "You et al., LogME: Practical Assessment of Pre-trained Models for Transfer "
                       "Learning, ICML 2021; Ranking and Tuning Pre-trained Models, JMLR 2022",
                       {"max_iters": 100, "tol": 1e-5}, 1),
    "gbc": ScoreSpec("gbc", gbc, "features", (None, 0.0),
                     "Pandy et al., Transferability Estimation using Bhattacharyya Class "
                     "Separability, CVPR 2022", {"dims": 64, "gaussian": "spherical"}, 2),
    "parc": ScoreSpec("parc", parc, "features", (-100.0, 100.0),
                      "Bolya et al., Scalable Diverse Model Selection for Accessible Transfer Learning, "
                      "NeurIPS 2021", {"dims": 32, "pca": "randomized", "method": "auto", "bins": 1 << 20}, 2),
    "tmi": ScoreSpec("tmi", tmi, "features", (None, None),
                     "Xu & Kang, Fast and Accurate Transferability Measurement by Evaluating Intra-class "
                     "Feature Variance, ICCV 2023", {"k": 3, "norm": "max", "min_dist": 1.0}, 4),
    "transrate": ScoreSpec("transrate", transrate, "features", (None, None),
                           "Huang et al., Frustratingly Easy Transferability Estimation, ICML 2022",
                           {"eps": 1e-4, "class_weights": "uniform"}, 1),
    "knn": ScoreSpec("knn", knn, "features", (0.0, 1.0),
                     "Sorkhei et al., k-NN as a Simple and Effective Estimator of Transferability, "
                     "TMLR 2025 (the hold-one-out k-NN of Bolya et al.'s PARC code)",
                     {"k": 1, "loo": "published"}, 1),
}

_SFDA_PAPER = ("Shao et al., Not All Models Are Equal: Predicting Model Transferability in a "
               "Self-challenging Fisher Space, ECCV 2022")
_PACTRAN_PAPER = ("Ding et al., PACTran: PAC-Bayesian Metrics for Estimating the Transferability of "
                  "Pretrained Models to Classification Tasks, ECCV 2022")
_ETRAN_PAPER = "Gholami et al., ETran: Energy-Based Transferability Estimation, ICCV 2023"
_NCTI_PAPER = ("Wang et al., How Far Pre-trained Models Are from Neural Collapse on the Target Dataset "
               "Informs their Transferability, ICCV 2023")
_NCTI_HP = {"dims": 64, "variance_dims": 32, "svd_divisor": "n-C"}
REGISTRY.update({
    "sfda": ScoreSpec("sfda", sfda, "features", (0.0, 1.0), _SFDA_PAPER,
                      {"shrinkage": None, "power_iters": 3}, 1,
                      version=2),  # 2: float32 within-class eigenvalues re-measured (docs/scorers.md)
    "pactran": ScoreSpec("pactran", pactran, "features", (None, None), _PACTRAN_PAPER,
                         {"lda": 1.0, "s2_factor": 10.0, "max_iters": 1000, "tol": 1e-6}, 1,
                         version=2),  # 2: preconditioned L-BFGS, converged in float32 (docs/scorers.md)
    "pac_dirichlet": ScoreSpec("pac_dirichlet", pac_dirichlet, "source", (None, None), _PACTRAN_PAPER,
                               {"alpha": 1.0, "iters": 10}, 1),
    "pac_gamma": ScoreSpec("pac_gamma", pac_gamma, "source", (None, None), _PACTRAN_PAPER,
                           {"alpha": 1.0, "iters": 10}, 1),
    "etran_energy": ScoreSpec("etran_energy", etran_energy, "features", (None, None), _ETRAN_PAPER,
                              {"percent": 0.5, "tail": "bottom"}, 1),
    "etran_lda": ScoreSpec("etran_lda", etran_lda, "features", (0.0, 1.0), _ETRAN_PAPER,
                           {"form": "published"}, 1),
    "etran": ScoreSpec("etran", None, "features", (0.0, 2.0), _ETRAN_PAPER, {}, 1,
                       ("etran_energy", "etran_lda"), etran_combine),
    "ncti_seli": ScoreSpec("ncti_seli", ncti_seli, "features", (0.0, None), _NCTI_PAPER, dict(_NCTI_HP), 1),
    "ncti_ncc": ScoreSpec("ncti_ncc", ncti_ncc, "features", (0.0, 1.0), _NCTI_PAPER, dict(_NCTI_HP), 1),
    "ncti_vc": ScoreSpec("ncti_vc", ncti_vc, "features", (None, None), _NCTI_PAPER, dict(_NCTI_HP), 1),
    "ncti": ScoreSpec("ncti", None, "features", (-1.0, 2.0), _NCTI_PAPER, {}, 1,
                      ("ncti_seli", "ncti_ncc", "ncti_vc"), ncti_combine),
})

SCORE_NAMES = tuple(REGISTRY)

__all__ = [
    "REGISTRY", "SCORE_NAMES", "ScoreSpec", "validate_inputs",
    "hscore", "reg_hscore", "nce", "leep", "nleep", "logme", "logme_regression", "gbc",
    "hscore_from_stats", "reg_hscore_from_stats", "nce_from_stats", "nleep_from_stats",
    "logme_from_stats", "gbc_from_stats", "fit_gmm", "gmm_log_posteriors",
    "parc", "tmi", "transrate", "knn", "parc_from_stats", "tmi_from_stats", "transrate_from_stats",
    "knn_from_stats",
    "sfda", "pactran", "pac_dirichlet", "pac_gamma", "etran_energy", "etran_lda", "etran_combine",
    "ncti_terms", "ncti_seli", "ncti_ncc", "ncti_vc", "ncti_combine",
]
