"""A reference posterior by NUTS for chosen data points, and the guide against it.

:func:`nuts_reference` runs Pyro's NUTS kernel in ``MCMC`` for chosen points of a model
with continuous latents and reports the ESS and R-hat of its chains;
:func:`compare_to_reference` compares the guide's draws with it by moments (mean
difference in NUTS standard deviations, ratio of standard deviations).  Guide draws are
independent: their own ESS and R-hat say nothing about the guide's quality.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyro
import torch
import xarray as xr
from pyro import poutine

from .. import _arviz
from ..errors import DataError, IncompatibleEstimatorError
from ..traces import data_frame, data_plate_name, latent_sites
from ._common import _check_x, _coords, _dims, _frozen, _name, _site_values, _squeeze_feature
from .importance import PointDraws, check_points

__all__ = [
    "GuideVsReference",
    "NutsConfig",
    "NutsReference",
    "compare_to_reference",
    "nuts_reference",
]


@contextlib.contextmanager
def _threads(num_threads: int | None):
    if num_threads is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@dataclass(frozen=True)
class NutsConfig:
    """Settings of the NUTS reference (Pyro's ``NUTS`` kernel in ``MCMC``).

    Chains run one after another, each from its own random start (``init_to_uniform``
    with ``init_radius`` in the unconstrained space), so that R-hat compares
    independent chains.  ``num_threads`` limits torch's intra-op threads while
    sampling (1 is fastest for the tiny tensors of one point; None leaves it alone).
    """

    num_chains: int = 4
    num_samples: int = 200
    warmup: int = 200
    max_tree_depth: int = 8
    target_accept: float = 0.8
    init_radius: float = 2.0
    num_threads: int | None = 1
    jit_compile: bool = False

    def __post_init__(self):
        if self.num_chains < 1 or self.num_samples < 4 or self.warmup < 0:
            raise ValueError(f"NUTS needs num_chains >= 1, num_samples >= 4 and warmup >= 0; "
                             f"got {self.num_chains}, {self.num_samples}, {self.warmup}")


@dataclass(frozen=True)
class NutsReference:
    """NUTS draws of the latents for chosen points, with ESS and R-hat of the chains.

    ``draws[site]`` has shape ``(chain, draw, P, F)`` for sites inside the data plate
    (P = ``len(points)``) and ``(chain, draw, F)`` for global sites; ``ess`` and
    ``rhat`` have the same shapes without ``(chain, draw)``.  ``conditioned_on_all``
    is True when the model has global latents, so NUTS conditioned on every point.
    """

    points: np.ndarray
    draws: dict[str, np.ndarray]
    local: dict[str, bool]
    ess: dict[str, np.ndarray]
    rhat: dict[str, np.ndarray]
    divergences: list[int]
    seconds: float
    config: NutsConfig
    conditioned_on_all: bool

    def summary(self) -> dict:
        return {"points": self.points.tolist(), "num_chains": self.config.num_chains,
                "num_samples": self.config.num_samples, "warmup": self.config.warmup,
                "min_ess": float(min(v.min() for v in self.ess.values())),
                "max_rhat": float(max(v.max() for v in self.rhat.values())),
                "divergences": int(sum(self.divergences)), "seconds": round(self.seconds, 1)}

    def dataset(self) -> xr.Dataset:
        data = {}
        for name, v in self.draws.items():
            dims = _dims(name, self.local[name], v.shape[-1])
            data[name] = (("chain", "draw", *dims), _squeeze_feature(v))
            data[f"{name}_ess"] = (dims, _squeeze_feature(self.ess[name]))
            data[f"{name}_rhat"] = (dims, _squeeze_feature(self.rhat[name]))
        attrs = {"method": "NUTS (pyro.infer.MCMC)", "num_chains": self.config.num_chains,
                 "num_samples": self.config.num_samples, "warmup": self.config.warmup,
                 "divergences": int(sum(self.divergences)),
                 "conditioned_on_all_points": int(self.conditioned_on_all),
                 "seconds": float(self.seconds)}
        return xr.Dataset(data, coords=_coords(self.draws, self.local, self.points), attrs=attrs)


def _model_sites(model, x: torch.Tensor) -> tuple[dict[str, dict], str | None]:
    with torch.no_grad():
        tr = poutine.trace(model).get_trace(x)
    return {name: tr.nodes[name] for name in latent_sites(tr)}, data_plate_name(tr)


def _check_continuous(model, sites: Mapping[str, dict]) -> None:
    for name, site in sites.items():
        fn = site["fn"]
        if fn.support.is_discrete and site["infer"].get("enumerate") is None:
            base = getattr(fn, "base_dist", fn)
            raise IncompatibleEstimatorError(
                f"NUTS needs continuous latents, but site {name!r} of model {_name(model)} "
                f"is discrete ({type(base).__name__}, support {fn.support}). Use the "
                f"importance-sampling diagnostics (importance_diagnostics: PSIS k-hat and "
                f"ESS per point) and sbc(), or sum the site out by enumeration: mark it "
                f"with infer={{'enumerate': 'parallel'}} (Pyro's NUTS then enumerates it), "
                f"or compute log p(x) exactly if the model can enumerate its latents")


def nuts_reference(model, x: torch.Tensor, points: Sequence[int], *,
                   config: NutsConfig | None = None, seed: int = 0) -> NutsReference:
    """Reference posterior draws by NUTS for the data points ``points`` of ``x``.

    When every latent lives inside the model's data plate, the posterior factorises
    over points and NUTS conditions on ``x[points]`` only (one joint run per chain).
    Otherwise (global latents, e.g. :class:`~ppl_dgm.models.Hierarchical`) it conditions
    on all of ``x`` and reports the global sites and the chosen points' local sites.

    Raises :class:`~ppl_dgm.errors.IncompatibleEstimatorError` for a discrete latent
    (NUTS needs gradients) and :class:`~ppl_dgm.errors.DataError` for bad indices.

    Example::

        ref = nuts_reference(model, data.test, [0, 5, 9], config=NutsConfig(num_chains=4))
        ref.summary()["max_rhat"]
    """
    from pyro.infer import MCMC, NUTS
    from pyro.infer.autoguide.initialization import init_to_uniform

    config = config or NutsConfig()
    x = _check_x(x)
    pts = check_points(points, x.shape[0])
    if pts.size == 0:
        raise DataError("nuts_reference needs at least one point index")
    sites, plate = _model_sites(model, x[:min(2, x.shape[0])])
    _check_continuous(model, sites)
    local = {name: data_frame(site, plate) is not None for name, site in sites.items()}
    conditioned_on_all = not all(local.values())
    xc = x if conditioned_on_all else x[torch.as_tensor(pts, device=x.device)]
    sel = torch.as_tensor(pts if conditioned_on_all else np.arange(len(pts)), device=x.device)
    chains: dict[str, list[np.ndarray]] = {name: [] for name in sites}
    divergences = []
    t0 = time.perf_counter()
    with _frozen(model), _threads(config.num_threads), pyro.validation_enabled(False):
        for c in range(config.num_chains):
            pyro.set_rng_seed(seed * 1000 + c)
            kernel = NUTS(model, init_strategy=init_to_uniform(radius=config.init_radius),
                          max_tree_depth=config.max_tree_depth,
                          target_accept_prob=config.target_accept,
                          jit_compile=config.jit_compile, ignore_jit_warnings=True)
            mcmc = MCMC(kernel, num_samples=config.num_samples, warmup_steps=config.warmup,
                        num_chains=1, disable_progbar=True)
            mcmc.run(xc)
            samples = mcmc.get_samples()
            for name, site in sites.items():
                v = samples[name].detach()
                # (draw, *batch, *event): one more leading dim than the site had
                site_like = dict(site, value=v)
                vals, is_local = _site_values(site_like, _plate_depth(site), v.shape[0],
                                              plate)
                if is_local:
                    vals = vals.index_select(1, sel.to(vals.device))
                chains[name].append(vals.float().cpu().numpy())
            div = mcmc.diagnostics().get("divergences", {})
            divergences.append(int(sum(len(v) for v in div.values())))
    seconds = time.perf_counter() - t0
    draws = {name: np.stack(v, 0) for name, v in chains.items()}
    ess = {name: _arviz.ess(v) for name, v in draws.items()}
    rhat = ({name: _arviz.rhat(v) for name, v in draws.items()} if config.num_chains > 1
            else {name: np.full(v.shape[2:], np.nan) for name, v in draws.items()})
    return NutsReference(pts, draws, local, ess, rhat, divergences, seconds, config,
                         conditioned_on_all)


def _plate_depth(site: dict) -> int:
    """The number of batch dims of a site as the unvectorised model traced it."""
    return len(site["fn"].batch_shape)


@dataclass(frozen=True)
class GuideVsReference:
    """Moments of guide draws against reference (NUTS) draws, per site, point, feature.

    ``mean_diff_sd`` is ``(guide mean - NUTS mean) / NUTS sd`` and ``sd_ratio`` is
    ``guide sd / NUTS sd``; ``mcse`` is the Monte Carlo error of the NUTS mean,
    ``sd / sqrt(ESS)``.  A good guide has ``|mean_diff_sd|`` small and ``sd_ratio``
    near 1; a mean-field guide typically has ``sd_ratio < 1``.
    """

    points: np.ndarray
    guide: PointDraws = field(repr=False)
    reference: NutsReference = field(repr=False)
    moments: xr.Dataset = field(repr=False)

    def rows(self) -> list[dict]:
        """One row per (site, point, feature), for printing."""
        out = []
        for name in self.reference.draws:
            g = self.moments[f"{name}_guide_mean"]
            for idx in np.ndindex(g.shape):
                row = {"site": name}
                for dim, i in zip(g.dims, idx):
                    row[dim] = int(g[dim].values[i]) if dim in g.coords else i
                for stat in ("guide_mean", "nuts_mean", "nuts_mcse", "guide_sd", "nuts_sd",
                             "mean_diff_sd", "sd_ratio", "nuts_rhat", "nuts_ess"):
                    row[stat] = float(self.moments[f"{name}_{stat}"].values[idx])
                out.append(row)
        return out


def compare_to_reference(guide_draws: PointDraws, reference: NutsReference) -> GuideVsReference:
    """Compare guide draws with NUTS draws for the reference's points (moments)."""
    g = guide_draws.select(reference.points) if len(reference.points) else guide_draws
    data = {}
    for name, ref in reference.draws.items():
        if name not in g.latents:
            raise DataError(f"the guide draws have no site {name!r} (they have "
                            f"{sorted(g.latents)})")
        q = g.latents[name].astype(np.float64)                 # (S, [P], F)
        r = ref.reshape(-1, *ref.shape[2:]).astype(np.float64)  # (C*D, [P], F)
        dims = _dims(name, reference.local[name], ref.shape[-1])
        stats = {
            "guide_mean": q.mean(0), "guide_sd": q.std(0, ddof=1),
            "nuts_mean": r.mean(0), "nuts_sd": r.std(0, ddof=1),
        }
        stats["nuts_mcse"] = stats["nuts_sd"] / np.sqrt(reference.ess[name])
        stats["mean_diff_sd"] = (stats["guide_mean"] - stats["nuts_mean"]) / stats["nuts_sd"]
        stats["sd_ratio"] = stats["guide_sd"] / stats["nuts_sd"]
        stats["nuts_rhat"] = reference.rhat[name]
        stats["nuts_ess"] = reference.ess[name]
        for key, value in stats.items():
            data[f"{name}_{key}"] = (dims, _squeeze_feature(np.asarray(value)))
    ds = xr.Dataset(data, coords=_coords(reference.draws, reference.local, reference.points))
    return GuideVsReference(reference.points, g, reference, ds)
