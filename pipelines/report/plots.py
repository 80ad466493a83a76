"""The report's figures (matplotlib, Agg, PNG): per-variant distributions over the repeat splits
beside their baseline, the lr x wd search landscape, and validation curves."""
from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # headless: the report runs on cluster nodes without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from attnsweep.pipelines.report.stats import eval_set_order  # noqa: E402

BASE_COLOR, SAME_COLOR, BETTER_COLOR, WORSE_COLOR = "#7f7f7f", "#4c72b0", "#2ca02c", "#d62728"
DPI = 110
MIN_BOX_N = 5  # runs per variant below which a box plot is not drawn


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def grouped_order(order: list[str], baselines: dict[str, str]) -> list[str]:
    """Each baseline followed by its variants, so a variant stands beside its baseline."""
    heads = list(dict.fromkeys(baselines[v] if baselines[v] in order else v for v in order))
    return [v for h in heads for v in [h, *(x for x in order if baselines[x] == h and x != h)]]


def distribution_plot(results: pd.DataFrame, comp: pd.DataFrame, metric: str, dataset: str,
                      order: list[str], baselines: dict[str, str], path: Path) -> Path:
    """Box (from MIN_BOX_N runs, else a bar at the mean) + strip plot per variant over the repeat
    splits (usable runs), one panel per evaluated set; colour: baseline grey, significantly better green / worse red, otherwise blue."""
    rep = results[(results["phase"] == "repeat") & (results["dataset"] == dataset)
                  & (results["status"] == "ok") & results[metric].notna()]
    sets = eval_set_order(rep["eval_set"].unique())
    variants = [v for v in grouped_order(order, baselines) if v in set(rep["variant"])]
    fig, axes = plt.subplots(1, len(sets), figsize=(max(4.5, 0.75 * len(variants)) * len(sets), 4.2),
                             squeeze=False)
    rng = np.random.default_rng(0)  # jitter only; fixed so the figure is reproducible
    for ax, eval_set in zip(axes[0], sets):
        es = rep[rep["eval_set"] == eval_set]
        sig = comp[(comp["metric"] == metric) & (comp["dataset"] == dataset)
                   & (comp["eval_set"] == eval_set)].set_index("variant")
        data = [100 * es.loc[es["variant"] == v, metric].to_numpy() for v in variants]
        colors = []
        for v in variants:
            if baselines[v] == v:
                colors.append(BASE_COLOR)
            elif v in sig.index and sig.loc[v, "significant"]:
                colors.append(BETTER_COLOR if sig.loc[v, "diff"] > 0 else WORSE_COLOR)
            else:
                colors.append(SAME_COLOR)
        for i, (d, c) in enumerate(zip(data, colors), start=1):
            if len(d) >= MIN_BOX_N:  # quartiles of fewer points say nothing: points and the mean then
                box = ax.boxplot([d], positions=[i], widths=0.55, patch_artist=True, showfliers=False)
                box["boxes"][0].set(facecolor=c, alpha=0.25, edgecolor=c)
            elif len(d):
                ax.hlines(d.mean(), i - 0.25, i + 0.25, color=c, lw=2)
            ax.scatter(i + rng.uniform(-0.12, 0.12, len(d)), d, s=14, color=c, zorder=3)
        ax.set_xticks(range(1, len(variants) + 1), variants, rotation=35, ha="right", fontsize=8)
        ax.set_title(f"{dataset} / {eval_set}", fontsize=10)
        ax.set_ylabel(f"{metric} (%)")
        ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def posterior_plot(comp: pd.DataFrame, metric: str, dataset: str, path: Path) -> Path | None:
    """The Bayesian correlated t-test's posterior of (variant - baseline) per comparison: a panel
    per tested variant (columns) and evaluated set (rows), the ROPE shaded, the areas left of,
    inside and right of it coloured worse / equivalent / better, their probabilities in the title.
    None when no comparison of this metric and dataset has a posterior."""
    from scipy import stats as sps

    part = comp[(comp["metric"] == metric) & (comp["dataset"] == dataset) & comp["posterior_scale"].notna()]
    if part.empty:
        return None
    sets = eval_set_order(part["eval_set"].unique())
    variants = list(dict.fromkeys(part["variant"]))
    fig, axes = plt.subplots(len(sets), len(variants), figsize=(3.4 * len(variants), 2.5 * len(sets)),
                             squeeze=False)
    for i, eval_set in enumerate(sets):
        for j, v in enumerate(variants):
            ax = axes[i][j]
            row = part[(part["eval_set"] == eval_set) & (part["variant"] == v)]
            if row.empty:
                ax.set_axis_off()
                continue
            r = row.iloc[0]
            df, loc, scale, rope = r["posterior_df"], 100 * r["posterior_mean"], 100 * r["posterior_scale"], 100 * r["rope"]
            if scale > 0:
                lo, hi = sps.t.ppf([0.001, 0.999], df, loc, scale)
                xs = np.linspace(min(lo, -1.5 * rope), max(hi, 1.5 * rope), 400)
                ys = sps.t.pdf(xs, df, loc, scale)
                ax.plot(xs, ys, color="#333333", lw=1)
                for mask, color in ((xs < -rope, WORSE_COLOR), ((xs >= -rope) & (xs <= rope), BASE_COLOR),
                                    (xs > rope, BETTER_COLOR)):
                    ax.fill_between(xs, ys, where=mask, color=color, alpha=0.45, lw=0)
            else:  # every split gave the same difference: the posterior is a point
                ax.axvline(loc, color="#333333", lw=2)
            ax.axvspan(-rope, rope, color=BASE_COLOR, alpha=0.12)
            ax.axvline(0, color="#999999", lw=0.6, ls=":")
            ax.set_yticks([])
            ax.set_title(f"{v} vs {r['baseline']} ({eval_set})\nworse {r['prob_worse']:.2f} | equiv. "
                         f"{r['prob_equivalent']:.2f} | better {r['prob_better']:.2f}", fontsize=8)
            ax.set_xlabel(f"difference in {metric} (points)", fontsize=8)
            ax.tick_params(labelsize=7)
    fig.suptitle(f"{dataset}: posterior of the difference (Bayesian correlated t-test), ROPE shaded", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _is_grid(land: pd.DataFrame) -> bool:
    """A grid search fills (nearly) every lr x wd cell; sampled values (TPE) leave most empty."""
    n_lr, n_wd = land["lr"].nunique(), land["weight_decay"].nunique()
    filled = len(land[["lr", "weight_decay"]].drop_duplicates())
    return n_lr <= 8 and n_wd <= 8 and filled >= 0.75 * n_lr * n_wd


def landscape_plot(landscape: pd.DataFrame, dataset: str, order: list[str], path: Path) -> Path:
    """lr x wd map of the mean validation selection metric per variant: a heatmap for a grid search,
    a scatter on log axes for a sampled (TPE) search. One colour scale for the whole dataset."""
    land = landscape[landscape["dataset"] == dataset]
    metric = land["metric"].iloc[0] if len(land) else "balanced_accuracy"
    scale = 1 if metric == "loss" else 100  # fractions in percent; a loss as it is
    variants = [v for v in order if v in set(land["variant"])]
    cols = min(3, len(variants))
    rows = -(-len(variants) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.1 * rows), squeeze=False,
                             layout="constrained")
    vmin, vmax = scale * land["val_mean"].min(), scale * land["val_mean"].max()
    for ax in axes.flat[len(variants):]:
        ax.axis("off")
    for ax, v in zip(axes.flat, variants):
        lv = land[land["variant"] == v]
        if _is_grid(lv):
            grid = lv.pivot(index="weight_decay", columns="lr", values="val_mean") * scale
            im = ax.imshow(grid.to_numpy(), cmap="viridis", vmin=vmin, vmax=vmax, origin="lower",
                           aspect="auto")
            ax.set_xticks(range(grid.shape[1]), [f"{x:g}" for x in grid.columns], fontsize=7)
            ax.set_yticks(range(grid.shape[0]), [f"{y:g}" for y in grid.index], fontsize=7)
            for (i, j), val in np.ndenumerate(grid.to_numpy()):
                if not np.isnan(val):
                    ax.text(j, i, f"{val:.1f}", ha="center", va="center", fontsize=7,
                            color="white" if val < (vmin + vmax) / 2 else "black")
        else:
            im = ax.scatter(lv["lr"], lv["weight_decay"], c=scale * lv["val_mean"],
                            cmap="viridis", vmin=vmin, vmax=vmax, s=40)
            ax.set_xscale("log")
            lo, hi = lv["lr"].min() / 1.5, lv["lr"].max() * 1.5
            ax.set_xlim(lo, hi)
            ticks = np.geomspace(lo, hi, 4)  # log ticks of a sub-decade range would crowd
            ax.set_xticks(ticks, [f"{t:.2g}" for t in ticks])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.tick_params(labelsize=7)
            ax.set_yscale("symlog", linthresh=max(lv["weight_decay"][lv["weight_decay"] > 0].min()
                                                  if (lv["weight_decay"] > 0).any() else 1e-6, 1e-8))
        ax.set_title(v, fontsize=9)
        ax.set_xlabel("lr", fontsize=8)
        ax.set_ylabel("weight decay", fontsize=8)
    fig.colorbar(im, ax=axes.ravel().tolist(), label=f"val {metric}" + ("" if scale == 1 else " (%)"), shrink=0.8)
    fig.suptitle(f"{dataset}: search landscape (mean over the search splits)", fontsize=10)
    return _save(fig, path)


def curves_plot(epochs: pd.DataFrame, results: pd.DataFrame, dataset: str, order: list[str],
                path: Path, metric: str = "balanced_accuracy") -> Path | None:
    """Validation `metric` (the study's selection metric) per epoch over the repeat splits: the
    mean per variant, and a band of ± one standard deviation across the splits."""
    column = f"val_{metric}"
    trials = results.loc[(results["phase"] == "repeat") & (results["dataset"] == dataset), "trial_id"]
    ep = epochs[(epochs["phase"] == "repeat") & epochs["trial_id"].isin(set(trials))]
    ep = ep[ep[column].notna()]
    if ep.empty:
        return None
    scale = 1 if metric == "loss" else 100
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    agg = ep.groupby(["variant", "epoch"])[column].agg(["mean", "std"]) * scale
    for v in order:
        if v in agg.index.get_level_values(0):
            a = agg.loc[v]
            (line,) = ax.plot(a.index, a["mean"].to_numpy(), marker="o", ms=3, label=v)
            std = a["std"].fillna(0).to_numpy()  # one split: no spread
            ax.fill_between(a.index, a["mean"] - std, a["mean"] + std, color=line.get_color(), alpha=0.15, lw=0)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"val {metric}" + ("" if metric == "loss" else " (%)"))
    ax.set_title(f"{dataset}: validation curves (mean ± std over repeat splits)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def confusion_plot(matrices: dict[str, np.ndarray], class_names: list[str] | None, dataset: str,
                   path: Path) -> Path:
    """One panel per variant: the test confusion matrix summed over the repeat splits, each row
    normalised to the true class (the diagonal is the per-class recall), counts in the cells."""
    from sklearn.metrics import ConfusionMatrixDisplay

    variants = list(matrices)
    k = len(next(iter(matrices.values())))
    labels = class_names if class_names and len(class_names) == k else [str(i) for i in range(k)]
    cols = min(3, len(variants))
    rows = -(-len(variants) // cols)
    size = 1.2 + 0.55 * k
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols + 0.6, size * rows + 0.4), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[len(variants):]:
        ax.axis("off")
    for ax, v in zip(axes.flat, variants):
        cm = matrices[v]
        norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ConfusionMatrixDisplay(norm, display_labels=labels).plot(ax=ax, colorbar=False, values_format=".2f",
                                                                 im_kw={"vmin": 0, "vmax": 1})
        ax.set_title(f"{v} (n={int(cm.sum())} images)", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xticklabels(labels, rotation=35, ha="right")
    fig.suptitle(f"{dataset}: test confusion matrices, summed over the repeat splits (row-normalised)",
                 fontsize=10)
    return _save(fig, path)


def explanation_grid(rows: list, images: np.ndarray, class_names: list[str], path: Path) -> Path:
    """Paper 002's Table 4 layout: the inputs on top, then one row per (method, variant); columns:
    one test image per class (map over the image) and the mean map over N images."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    cols = len(class_names) + 1
    fig, axes = plt.subplots(len(rows) + 1, cols, figsize=(1.7 * cols + 1.6, 1.7 * (len(rows) + 1)),
                             squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for j, name in enumerate(class_names):
        axes[0, j].imshow(images[j])
        axes[0, j].set_title(name, fontsize=9)
    axes[0, -1].axis("off")
    axes[0, -1].set_title(f"mean ({rows[0].n} images)", fontsize=9, y=0.0)
    axes[0, 0].set_ylabel("input", fontsize=8, rotation=0, ha="right", va="center")
    for i, row in enumerate(rows, start=1):
        for j in range(len(class_names)):
            overlay = show_cam_on_image(images[j].astype(np.float32) / 255, row.per_class[j] / 255,
                                        use_rgb=True, image_weight=0.45)
            axes[i, j].imshow(overlay)
        axes[i, -1].imshow(row.mean, cmap="jet", vmin=0, vmax=255)
        axes[i, 0].set_ylabel(f"{row.method}\n{row.variant}", fontsize=8, rotation=0, ha="right", va="center")
    return _save(fig, path)


def cd_diagram(mean_ranks: pd.Series, nemenyi: pd.DataFrame, cd: float, alpha: float, title: str,
               path: Path) -> Path:
    """Critical-difference diagram (Demšar 2006) by scikit-posthocs: the variants on the mean-rank
    axis, bars joining those the Nemenyi test does not separate at `alpha`; the CD drawn above."""
    import scikit_posthocs as sp

    fig, ax = plt.subplots(figsize=(7.5, 0.9 + 0.32 * len(mean_ranks)))
    sp.critical_difference_diagram(mean_ranks, nemenyi, ax=ax, alpha=alpha)
    lo = float(mean_ranks.min())
    ax.plot([lo, lo + cd], [1.3, 1.3], color="#222222", lw=2, transform=ax.get_xaxis_transform(), clip_on=False)
    ax.text(lo + cd, 1.3, f"  CD = {cd:.3g}", ha="left", va="center", fontsize=8,
            transform=ax.get_xaxis_transform())
    ax.set_title(title, fontsize=10, pad=42)
    return _save(fig, path)
