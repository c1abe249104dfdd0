"""PNG figures for :mod:`ppl_dgm.diagnostics` (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from scipy import stats as sps  # noqa: E402

__all__ = ["plot_ess", "plot_guide_vs_reference", "plot_khat", "plot_sbc", "save_plots",
           "sbc_bands", "sbc_verdict"]


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _legend_below(ax, ncol: int = 3) -> None:
    """A legend under the axes, where it cannot cover data."""
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=ncol,
              frameon=False)


def plot_khat(importance, path: str | Path) -> Path:
    """k-hat per data point, with the 0.5 and 0.7 levels and the flagging threshold for
    S draws (labelled in the legend, below the axes); flagged points in red; rechecked
    values (more draws) as open circles; a histogram of k-hat with the threshold."""
    imp = importance
    k = imp.khat.copy()
    finite = np.isfinite(k)
    floor = min(-0.5, float(k[finite].min()) - 0.05) if finite.any() else -0.5
    shown = np.where(np.isneginf(k), floor, k)
    x = np.arange(len(k)) if imp.per_point else np.array([0])
    fig, (ax, axh) = plt.subplots(1, 2, figsize=(10, 4.2), width_ratios=[3, 1], sharey=True)
    flagged = imp.flagged
    ax.scatter(x[~flagged], shown[~flagged], s=9, color="tab:blue", label="k-hat of a point")
    ax.scatter(x[flagged], shown[flagged], s=14, color="tab:red",
               label=f"flagged: k-hat > threshold ({int(flagged.sum())})")
    if imp.khat_recheck is not None:
        rk = imp.khat_recheck
        m = np.isfinite(rk)
        ax.scatter(x[m], rk[m], s=30, facecolors="none", edgecolors="k",
                   label=f"recheck with S={imp.recheck_draws}")
        for xi, a, b in zip(x[m], shown[m], rk[m]):
            ax.plot([xi, xi], [a, b], color="0.6", lw=0.6)
    levels = ((0.5, ":", "k-hat = 0.5 (below: IS reliable)"),
              (0.7, "--", "k-hat = 0.7 (above: IS unreliable at any S)"),
              (imp.threshold, "-", f"flag threshold {imp.threshold:.3f} = "
                                   f"min(1 - 1/log10 S, 0.7), S={imp.num_draws}"))
    for level, style, lab in levels:
        ax.axhline(level, color="0.3", ls=style, lw=0.9, label=lab)
    if np.isneginf(k).any():
        ax.axhline(floor, color="0.7", lw=0.6)
        ax.annotate("k-hat = -inf (equal weights) drawn on this line", (0.01, floor),
                    xycoords=("axes fraction", "data"), xytext=(0, 3),
                    textcoords="offset points", fontsize=7, color="0.3")
    ax.set_xlabel("data point (index in the split)" if imp.per_point
                  else "whole data set (joint weights)")
    ax.set_ylabel("PSIS k-hat")
    ax.set_title(f"Pareto k-hat per point ({imp.num_draws} guide draws each)")
    _legend_below(ax, ncol=2)
    axh.hist(shown, bins=30, orientation="horizontal", color="tab:blue", alpha=0.7)
    axh.axhline(imp.threshold, color="0.3", lw=0.9, label=f"flag threshold {imp.threshold:.3f}")
    axh.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    axh.set_xlabel("number of points")
    axh.set_title("histogram of k-hat", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_ess(importance, path: str | Path) -> Path:
    """Importance-sampling ESS per point (log scale) against the point and against k-hat;
    the number of draws S (the largest possible ESS) and the k-hat flag threshold are
    labelled in the legends."""
    imp = importance
    x = np.arange(len(imp.ess)) if imp.per_point else np.array([0])
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4.2), width_ratios=[3, 2])
    flagged = imp.flagged
    for a, xs in ((ax, x), (ax2, np.where(np.isneginf(imp.khat), np.nan, imp.khat))):
        a.scatter(xs[~flagged], imp.ess[~flagged], s=9, color="tab:blue", label="a point")
        a.scatter(xs[flagged], imp.ess[flagged], s=14, color="tab:red",
                  label="flagged by k-hat")
        a.axhline(imp.num_draws, color="0.3", ls="--", lw=0.9,
                  label=f"S = {imp.num_draws} draws (largest possible ESS)")
        a.set_yscale("log")
    ax.set_xlabel("data point (index in the split)")
    ax.set_ylabel("IS effective sample size")
    ax.set_title("ESS = 1 / sum(w_norm^2) per point")
    _legend_below(ax)
    ax2.axvline(imp.threshold, color="0.3", lw=0.9,
                label=f"k-hat flag threshold {imp.threshold:.3f}")
    ax2.set_xlabel("PSIS k-hat")
    ax2.set_ylabel("IS effective sample size")
    ax2.set_title("ESS against k-hat")
    _legend_below(ax2, ncol=2)
    fig.tight_layout()
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
    fig.suptitle(f"Guide vs NUTS marginals ({ref.config.num_chains} chains x "
                 f"{ref.config.num_samples} draws; per point the dimensions where they "
                 f"differ most)", fontsize=10)
    fig.tight_layout(rect=(0, 0.3 / fig.get_figheight(), 1, 1))
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, [f"{n} (density)" for n in names], loc="lower center", ncol=2,
               fontsize=8, frameon=False)
    return _save(fig, path)


def sbc_verdict(sbc_result) -> str:
    """The SBC uniformity test's outcome as a test result, e.g. "uniform ranks not
    rejected at α = 0.01 (chi-square on 20 rank bins per dimension, Bonferroni over 8
    dimensions: p = 0.31)"."""
    res = sbc_result
    d = len(res.dim_names)
    outcome = "not rejected" if res.uniform else "rejected"
    return (f"uniform ranks {outcome} at α = {res.alpha:g} (chi-square on {res.num_bins} "
            f"rank bins per dimension, Bonferroni over {d} dimension{'s' if d > 1 else ''}: "
            f"p = {res.p_value:.2g})")


def sbc_bands(sbc_result) -> tuple[tuple[float, float], float]:
    """The bands of :func:`plot_sbc`, both at the test's family-wise level ``1 - alpha``
    (Bonferroni): the range of one bin count under uniform ranks, simultaneous over all
    bins and dimensions, and the half-width of the Kolmogorov-Smirnov band of one
    dimension's ECDF, simultaneous over all dimensions."""
    res = sbc_result
    n, d = res.ranks.shape
    a_bin = res.alpha / (res.num_bins * d)
    lo, hi = sps.binom.ppf([a_bin / 2, 1 - a_bin / 2], n, 1 / res.num_bins)
    return (float(lo), float(hi)), float(sps.kstwo.ppf(1 - res.alpha / d, n))


def plot_sbc(sbc_result, path: str | Path, *, max_dims: int = 8) -> Path:
    """SBC rank histograms and ECDF differences, with bands at the level of the test.

    Left: bin counts of the ranks per dimension (first ``max_dims``), with the range of a
    count under uniform ranks, simultaneous over every bin and dimension at 1 - alpha
    (Bonferroni).  Right: ECDF(rank) - uniform CDF per dimension, with the
    Kolmogorov-Smirnov band ``kstwo.ppf(1 - alpha/d, n)`` (simultaneous over the ``d``
    dimensions at 1 - alpha; conservative for discrete ranks): a curve leaving it is a
    KS rejection at the same level.  The title states the chi-square test's result
    (:func:`sbc_verdict`); the right panel counts the dimensions that leave the KS band.
    """
    res = sbc_result
    n, d = res.ranks.shape
    levels = res.num_draws + 1
    width = levels // res.num_bins
    level = f"{100 * (1 - res.alpha):g}%"
    (lo, hi), band = sbc_bands(res)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.6))
    bins = res.ranks // width
    shown = list(range(min(d, max_dims)))
    names = [res.dim_names[j] for j in shown]
    if d > len(shown):
        names[-1] += f" (first {len(shown)} of {d} dims shown)"
    edges = np.arange(res.num_bins + 1) * width
    ax.axhspan(lo, hi, color="0.85",
               label=f"{level} range of a count if uniform (all {res.num_bins} bins x {d} "
                     f"dims)")
    ax.axhline(n / res.num_bins, color="0.4", lw=0.8, label="expected count")
    for j, name in zip(shown, names):
        ax.stairs(np.bincount(bins[:, j], minlength=res.num_bins), edges, lw=1, label=name)
    ax.set_xlim(0, levels)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(f"rank of the true value among {res.num_draws} guide draws "
                  f"({res.num_bins} bins of {width} rank{'s' if width > 1 else ''})")
    ax.set_ylabel("simulations per bin")
    ax.set_title(f"SBC rank histograms ({n} simulations)", fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3,
              frameon=False)
    u = np.arange(1, levels + 1) / levels
    ax2.fill_between(u, -band, band, color="0.85",
                     label=f"{level} simultaneous band over {d} dims (KS, Bonferroni)")
    outside = 0
    for j in range(d):
        ecdf = np.searchsorted(np.sort(res.ranks[:, j]), np.arange(levels), side="right") / n
        diff = ecdf - u
        outside += int(np.abs(diff).max() > band)
        if j in shown:
            ax2.plot(u, diff, lw=1, label=names[j])
    ax2.axhline(0, color="0.4", lw=0.8)
    ax2.set_xlabel("fractional rank")
    ax2.set_ylabel("ECDF - uniform CDF")
    ax2.set_title(f"ECDF difference: {outside} of {d} dims leave the band", fontsize=10)
    ax2.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3,
               frameon=False)
    fig.suptitle("SBC: " + sbc_verdict(res), fontsize=10)
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

