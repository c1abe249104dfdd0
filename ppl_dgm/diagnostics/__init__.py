"""Posterior diagnostics for amortised guides, with ArviZ.

"Is my inference network any good, and for which data points?"  The tools here answer
it in four ways, each per data point where the model allows:

* **Importance weights** ``log w = log p(x, h) - log q(h | x)`` with the guide as
  proposal (vectorised particles through :func:`~ppl_dgm.traces.run_traces`):
  the PSIS shape ``k-hat`` (Vehtari et al. 2024, float64, relative efficiency 1 because
  guide draws are independent) and the importance-sampling effective sample size
  ``1 / sum(w_norm^2)``.  A point is flagged when ``k-hat`` exceeds the sample-size-aware
  threshold ``min(1 - 1/log10 S, 0.7)``; ``k-hat`` from 1000 draws is noisy (sd about
  0.1-0.15), so flagged points can be rechecked with more draws.
* **A reference posterior by NUTS** (:func:`nuts_reference`, Pyro MCMC) for chosen
  points of a model with continuous latents, compared with the guide by moments
  (:func:`compare_to_reference`), with ESS and R-hat of the NUTS chains.  Guide draws
  are independent: their own ESS and R-hat say nothing about the guide's quality.
* **Simulation-based calibration** (:func:`sbc`, Talts et al. 2018): the rank of the
  true latent among guide draws, for data simulated from the model, is uniform when
  the guide is the posterior; a chi-square test per dimension (Bonferroni-combined).
* **Model comparison on held-out log p(x)** (:func:`compare_models`) with paired
  per-point differences and their standard errors.  (PSIS-LOO over per-datapoint
  latents is meaningless: leaving a point out removes its latent too.)

:func:`to_inference_data` and :func:`diagnose` collect the results into ArviZ data
(``InferenceData`` with arviz 0.23, ``DataTree`` with arviz >= 1, through
:mod:`ppl_dgm._arviz`), exported to NetCDF by :func:`save_netcdf`.

One module a job, its public names re-exported here (all but ``plots``):

==========================  ==========================================================
``importance``              k-hat, IS-ESS, log p(x) and ELBO per point; kept draws
                            (and the memory they take: see its docstring)
``nuts``                    the NUTS reference and the guide compared with it
``sbc``                     simulation-based calibration
``model_comparison``        held-out log p(x) of several models, paired differences
``export``                  ArviZ data and NetCDF
``diagnosis``               all of the above in one call
``plots``                   PNG figures, imported on demand by
                            :meth:`Diagnosis.save` (it selects matplotlib's Agg backend)
==========================  ==========================================================
"""

from .diagnosis import Diagnosis, diagnose, select_nuts_points
from .export import _inference_data as _inference_data
from .export import load_netcdf, save_netcdf, to_inference_data
from .importance import (
    CONSTANT_TOL,
    ImportanceDiagnostics,
    PointDraws,
    check_points,
    importance_diagnostics,
    khat_threshold,
    psis,
)
from .model_comparison import ModelComparison, compare_models
from .nuts import (
    GuideVsReference,
    NutsConfig,
    NutsReference,
    compare_to_reference,
    nuts_reference,
)
from .sbc import SBCResult, rank_uniformity, sbc

__all__ = [
    "CONSTANT_TOL",
    "Diagnosis",
    "GuideVsReference",
    "ImportanceDiagnostics",
    "ModelComparison",
    "NutsConfig",
    "NutsReference",
    "PointDraws",
    "SBCResult",
    "check_points",
    "compare_models",
    "compare_to_reference",
    "diagnose",
    "importance_diagnostics",
    "khat_threshold",
    "load_netcdf",
    "nuts_reference",
    "psis",
    "rank_uniformity",
    "save_netcdf",
    "sbc",
    "select_nuts_points",
    "to_inference_data",
]
