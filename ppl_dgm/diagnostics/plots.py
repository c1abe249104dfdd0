"""PNG figures for :mod:`ppl_dgm.diagnostics` (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats as sps  # noqa: E402

__all__ = ["plot_ess", "plot_guide_vs_reference", "plot_khat", "plot_sbc", "save_plots"]


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_khat(importance, path: str | Path) -> Path:
    """k-hat per data point, with the 0.5 and 0.7 levels and the threshold for S draws;
    flagged points in red; rechecked values (more draws) as open circles."""
    imp = importance
    k = imp.khat.copy()
    finite = np.isfinite(k)
    floor = min(-0.5, float(k[finite].min()) - 0.05) if finite.any() else -0.5
    shown = np.where(np.isneginf(k), floor, k)
    x = np.arange(len(k)) if imp.per_point else np.array([0])
    fig, (ax, axh) = plt.subplots(1, 2, figsize=(10, 3.6), width_ratios=[3, 1], sharey=True)
    flagged = imp.flagged
    ax.scatter(x[~flagged], shown[~flagged], s=9, color="tab:blue", label="k-hat")
    ax.scatter(x[flagged], shown[flagged], s=14, color="tab:red",
               label=f"flagged ({int(flagged.sum())})")
    if imp.khat_recheck is not None:
        rk = imp.khat_recheck
        m = np.isfinite(rk)
        ax.scatter(x[m], rk[m], s=30, facecolors="none", edgecolors="k",
                   label=f"recheck, S={imp.recheck_draws}")
        for xi, a, b in zip(x[m], shown[m], rk[m]):
            ax.plot([xi, xi], [a, b], color="0.6", lw=0.6)
    for level, style, lab in ((0.5, ":", "0.5"), (0.7, "--", "0.7"),
                              (imp.threshold, "-", f"threshold S={imp.num_draws}")):
        ax.axhline(level, color="0.3", ls=style, lw=0.9)
        ax.text(x.max() if len(x) else 0, level, f" {lab}", va="bottom", ha="right",
                fontsize=7, color="0.3")
    if np.isneginf(k).any():
        ax.text(0, floor, " -inf (equal weights) drawn here", fontsize=7, va="bottom")
    ax.set_xlabel("data point" if imp.per_point else "whole data set (joint weights)")
    ax.set_ylabel("PSIS k-hat")
    ax.set_title(f"Pareto k-hat per point ({imp.num_draws} guide draws each)")
    ax.legend(fontsize=7, loc="upper left")
    axh.hist(shown, bins=30, orientation="horizontal", color="tab:blue", alpha=0.7)
    axh.axhline(imp.threshold, color="0.3", lw=0.9)
    axh.set_xlabel("points")
    return _save(fig, path)


def plot_ess(importance, path: str | Path) -> Path:
    """Importance-sampling ESS per point (log scale) against k-hat."""
    imp = importance
    x = np.arange(len(imp.ess)) if imp.per_point else np.array([0])
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.6), width_ratios=[3, 2])
    ax.scatter(x, imp.ess, s=9, c=np.where(imp.flagged, "tab:red", "tab:blue"))
    ax.axhline(imp.num_draws, color="0.3", ls="--", lw=0.9)
    ax.text(0, imp.num_draws, f" S={imp.num_draws}", va="bottom", fontsize=7)
    ax.set_yscale("log")
    ax.set_xlabel("data point")
    ax.set_ylabel("IS effective sample size")
    ax.set_title("1 / sum(w_norm^2) per point (red: flagged by k-hat)")
    k = np.where(np.isneginf(imp.khat), np.nan, imp.khat)
    ax2.scatter(k, imp.ess, s=9, c=np.where(imp.flagged, "tab:red", "tab:blue"))
    ax2.axvline(imp.threshold, color="0.3", lw=0.9)
    ax2.set_yscale("log")
    ax2.set_xlabel("k-hat")
    ax2.set_ylabel("ESS")
    ax2.set_title("ESS against k-hat")
    return _save(fig, path)


def _worst_features(comparison, name: str, p_i: int | None, max_dims: int) -> list[int]:
    """The ``max_dims`` features where guide and NUTS differ most (|standardised mean
    difference| + |log sd ratio|), in feature order."""
    m = comparison.moments
    diff = np.atleast_1d(m[f"{name}_mean_diff_sd"].values[p_i] if p_i is not None
                         else m[f"{name}_mean_diff_sd"].values)
    ratio = np.atleast_1d(m[f"{name}_sd_ratio"].values[p_i] if p_i is not None
                          else m[f"{name}_sd_ratio"].values)
    score = np.abs(diff) + np.abs(np.log(ratio))
    return sorted(np.argsort(-score, kind="stable")[:max_dims].tolist())


def plot_guide_vs_reference(comparison, path: str | Path, *, max_dims: int = 4) -> Path:
    """Marginal histograms of guide draws against NUTS draws: a row per point showing
    the ``max_dims`` dimensions of a vector latent where the two differ most; scalar
    latents and global sites are packed ``max_dims`` to a row."""
    ref, guide = comparison.reference, comparison.guide
    # vector sites: a row per point; scalar sites (and global ones) share packed rows
    merged, buf = [], []
    for name, v in ref.draws.items():
        vec = v.shape[-1] > 1
        if ref.local[name]:
            for p_i, p in enumerate(ref.points):
                panels = [(name, p_i, f, f"point {p}, {name}" + (f"[{f}]" if vec else ""))
                          for f in _worst_features(comparison, name, p_i, max_dims)]
                if vec:
                    merged.append(panels)
                else:
                    buf += panels
        else:
            buf += [(name, None, f, name + (f"[{f}]" if vec else ""))
                    for f in _worst_features(comparison, name, None, max_dims)]
        while len(buf) >= max_dims:
            merged.append(buf[:max_dims])
            buf = buf[max_dims:]
    if buf:
        merged.append(buf)
    ncols = max(len(r) for r in merged)
    fig, axes = plt.subplots(len(merged), ncols, figsize=(2.6 * ncols, 1.9 * len(merged)),
                             squeeze=False)
    for r, row in enumerate(merged):
        for c in range(ncols):
            ax = axes[r, c]
            if c >= len(row):
                ax.axis("off")
                continue
            name, p_i, f, label = row[c]
            nuts = ref.draws[name]
            nuts = (nuts[:, :, p_i, f] if p_i is not None else nuts[:, :, f]).reshape(-1)
            q = guide.latents[name]
            q = q[:, p_i, f] if p_i is not None else q[:, f]
            lo, hi = np.quantile(np.concatenate([nuts, q]), [0.002, 0.998])
            bins = np.linspace(lo, hi, 40)
            ax.hist(nuts, bins=bins, density=True, histtype="stepfilled", alpha=0.35,
                    color="k", label="NUTS")
            ax.hist(q, bins=bins, density=True, histtype="step", lw=1.4, color="tab:orange",
                    label="guide")
            rhat = ref.rhat[name]
            rhat = rhat[p_i, f] if p_i is not None else rhat[f]
            ax.set_title(f"{label}  R-hat {rhat:.3f}", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.set_yticks([])
            if r == 0 and c == 0:
                ax.legend(fontsize=7)
    fig.suptitle(f"Guide vs NUTS marginals ({ref.config.num_chains} chains x "
                 f"{ref.config.num_samples} draws; per point the dimensions where they "
                 f"differ most)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_sbc(sbc_result, path: str | Path, *, max_dims: int = 8) -> Path:
    """SBC rank histograms and ECDF differences with a simultaneous 95% band.

    Left: ranks of every dimension pooled into the test's bins, with the 99% range of a
    uniform bin count.  Right: ECDF(rank) - uniform CDF per dimension (first
    ``max_dims``), inside the Kolmogorov-Smirnov 95% band ``+-kstwo.ppf(0.95, n)``
    (conservative for discrete ranks): a curve leaving the band rejects uniformity.
    """
    res = sbc_result
    n, d = res.ranks.shape
    levels = res.num_draws + 1
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    bins = res.ranks // (levels // res.num_bins)
    shown = list(range(min(d, max_dims)))
    expected = n / res.num_bins
    lo, hi = sps.binom.ppf([0.005, 0.995], n, 1 / res.num_bins)
    ax.axhspan(lo, hi, color="0.85", label="99% range, uniform")
    ax.axhline(expected, color="0.4", lw=0.8)
    for j in shown:
        counts = np.bincount(bins[:, j], minlength=res.num_bins)
        ax.step(np.arange(res.num_bins + 1), np.r_[counts, counts[-1]], where="post", lw=1,
                label=res.dim_names[j] if len(shown) <= 8 else None)
    ax.set_xlabel(f"rank bin ({res.num_bins} bins of {levels // res.num_bins} ranks)")
    ax.set_ylabel("count")
    ax.set_title(f"SBC ranks: {n} simulations, {res.num_draws} guide draws")
    ax.legend(fontsize=6, ncol=2)
    u = np.arange(1, levels + 1) / levels
    band = sps.kstwo.ppf(0.95, n)
    ax2.fill_between(u, -band, band, color="0.85", label="95% simultaneous band (KS)")
    for j in shown:
        ecdf = np.searchsorted(np.sort(res.ranks[:, j]), np.arange(levels), side="right") / n
        ax2.plot(u, ecdf - u, lw=1, label=res.dim_names[j] if len(shown) <= 8 else None)
    ax2.axhline(0, color="0.4", lw=0.8)
    ax2.set_xlabel("fractional rank")
    ax2.set_ylabel("ECDF - uniform")
    verdict = "uniform" if res.uniform else "NOT uniform"
    ax2.set_title(f"ECDF difference; chi-square p = {res.p_value:.2g} ({verdict} at "
                  f"alpha={res.alpha})", fontsize=9)
    ax2.legend(fontsize=6)
    fig.tight_layout()
    return _save(fig, path)


def save_plots(diagnosis, out_dir: str | Path) -> dict[str, Path]:
    """Every plot that the results of :func:`~ppl_dgm.diagnostics.diagnose` allow."""
    out = Path(out_dir)
    paths = {"khat": plot_khat(diagnosis.importance, out / "khat.png"),
             "ess": plot_ess(diagnosis.importance, out / "ess.png")}
    if diagnosis.comparison is not None:
        paths["guide_vs_nuts"] = plot_guide_vs_reference(diagnosis.comparison,
                                                         out / "guide_vs_nuts.png")
    if diagnosis.sbc is not None:
        paths["sbc"] = plot_sbc(diagnosis.sbc, out / "sbc.png")
    return paths

