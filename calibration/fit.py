"""Fit a spectral model: every choice made by cross-validation on the data at hand, and recorded.

What is chosen, in this order, and how (docs/calibration.md has the figures):

1. The number of PLS components, for each EPO dimension and target scale:
   the simplest model whose squared CV errors are not significantly larger
   than those at the CV minimum (van der Voet's randomization test,
   calibration.selection), up to a ceiling `max_components`; a minimum at
   the ceiling is recorded as a warning, never silently.
2. With paired wet/dry spectra, the number of EPO components (1 to 8): the
   criterion is the expected error on *wet* spectra = CV error on the
   calibration spectra + the mean squared shift of the prediction between
   the wet and dry spectrum of pairs held out of the EPO fit (K-fold over
   the pairs; no reference values needed); again the simplest not
   significantly worse.
3. The target scale (y or √y, calibration.transform): lowest CV RMSE in the
   property's own unit.
4. The method: global PLS, memory-based local PLS, or their average
   (blend), compared on the model scale (where errors are homoscedastic,
   so a few organic soils do not decide); the simplest not significantly
   worse, in that order. Unless the local settings are given, the local
   models average 3 to k components, k the global model's choice in 1.:
   the cross-validated count of latent variables the spectra carry for this
   property (the range of component counts averaged as in the LOCAL
   procedure of Shenk, Westerhaus & Berzaghi 1997, J. Near Infrared
   Spectroscopy 5, 223-232, and WA-PLS; a fixed ceiling of 15 averaged too
   few on NIRsoil, where k is 17-25: docs/calibration.md).

Then from the chosen model's cross-validated predictions: the figures of
merit, the T²/Q limits and the moisture check (calibration.domain), and
the sample-specific uncertainty (calibration.uncertainty).

Folds are formed over `groups` (e.g. the soil sample id) when given, so
several scans of one soil never sit on both sides of a fold.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Sequence

import numpy as np

from calibration.domain import domain_limits, fit_moisture_index, moisture_meta
from calibration.epo import Epo, fit_epo
from calibration.metrics import figures_of_merit
from calibration.pls import fit_pls
from calibration.selection import ALPHA, criterion, parsimonious_choice
from calibration.transform import TRANSFORMS, TargetTransform
from calibration.uncertainty import fit_uncertainty

MAX_EPO_COMPONENTS = 8
PAIR_FOLDS = 5
METHODS = ("global", "local", "blend")


@dataclass
class _Curves:
    """Cross-validated predictions (n, K) on the model scale, T² and Q per component count, EPO shifts (m, K)."""

    pred: np.ndarray
    t2: np.ndarray
    q: np.ndarray
    shift: np.ndarray | None = None
    sq_err: list[np.ndarray] = field(default_factory=list)


def fold_ids(n: int, folds: int, seed: int, groups: Sequence[Any] | None = None) -> np.ndarray:
    """Fold number of each row: a seeded random partition of the rows, or of the distinct groups."""
    if groups is None:
        order = np.random.default_rng(seed).permutation(n)
        out = np.empty(n, dtype=int)
        out[order] = np.arange(n) % folds
        return out
    labels = np.asarray([str(g) for g in groups])
    uniq, inverse = np.unique(labels, return_inverse=True)
    order = np.random.default_rng(seed).permutation(uniq.shape[0])
    gf = np.empty(uniq.shape[0], dtype=int)
    gf[order] = np.arange(uniq.shape[0]) % folds
    return gf[inverse]


def cv_curves(z: np.ndarray, yt: np.ndarray, kmax: int, fold: np.ndarray) -> _Curves:
    """CV predictions, T² and Q of each sample against its fold's model, for 1..kmax components."""
    n = yt.shape[0]
    pred, t2, q = np.zeros((n, kmax)), np.zeros((n, kmax)), np.zeros((n, kmax))
    for f in np.unique(fold):
        test, train = fold == f, fold != f
        full = fit_pls(z[train], yt[train], kmax)
        xc = z[test] - full.x_mean
        rest = xc.copy()
        scores = np.zeros((xc.shape[0], kmax))
        for a in range(kmax):
            # Nested NIPALS models: deflate the new spectra with each component's weight and loading.
            t = rest @ full.weights[:, a]
            scores[:, a] = t
            rest = rest - np.outer(t, full.loadings[:, a])
            q[test, a] = np.einsum("ij,ij->i", rest, rest)
        pred[test] = np.cumsum(scores * full.y_loadings, axis=1) + full.y_mean
        t2[test] = np.cumsum(scores**2 / full.score_var, axis=1)
    return _Curves(pred, t2, q)


def pair_shifts(z: np.ndarray, yt: np.ndarray, wet: np.ndarray, dry: np.ndarray, g: int, kmax: int,
                seed: int) -> np.ndarray:
    """(m, kmax) model-scale prediction shift wet - dry of each pair, with EPO fitted without its fold."""
    m = wet.shape[0]
    out = np.zeros((m, kmax))
    pf = fold_ids(m, min(PAIR_FOLDS, m), seed + 1)
    for f in np.unique(pf):
        held, rest = pf == f, pf != f
        if rest.sum() < g:
            continue
        epo = fit_epo(wet[rest], dry[rest], g)
        fit = fit_pls(epo.apply(z), yt, kmax)
        d = epo.apply(wet[held]) - epo.apply(dry[held])     # centring cancels in the difference
        rem = d.copy()
        for a in range(kmax):
            t = rem @ fit.weights[:, a]
            out[held, a] = (out[held, a - 1] if a else 0.0) + t * fit.y_loadings[a]
            rem = rem - np.outer(t, fit.loadings[:, a])
    return out


def local_cv(z: np.ndarray, yt: np.ndarray, local: Any, fold: np.ndarray) -> np.ndarray:
    """Cross-validated local PLS predictions (neighbours searched among the other folds only)."""
    from calibration.model import _local_pls

    c = z - z.mean(axis=1, keepdims=True)
    unit = c / np.linalg.norm(c, axis=1, keepdims=True)
    pred = np.zeros(yt.shape[0])
    for f in np.unique(fold):
        test, train = np.flatnonzero(fold == f), np.flatnonzero(fold != f)
        corr = unit[test] @ unit[train].T
        kn = min(local.neighbours, train.shape[0])
        for row, i in enumerate(test):
            nn = train[np.argpartition(-corr[row], kn - 1)[:kn]]
            pred[i] = _local_pls(z[nn], yt[nn], z[i][None, :], local)[0]
    return pred


def local_shifts(z: np.ndarray, yt: np.ndarray, wet: np.ndarray, dry: np.ndarray, g: int, local: Any,
                 seed: int) -> np.ndarray:
    """Local-PLS prediction shift wet - dry of each pair, EPO fitted without the pair's fold."""
    from calibration.model import _local_pls

    m = wet.shape[0]
    out = np.zeros(m)
    pf = fold_ids(m, min(PAIR_FOLDS, m), seed + 1)
    for f in np.unique(pf):
        held, rest = np.flatnonzero(pf == f), pf != f
        if rest.sum() < g:
            continue
        epo = fit_epo(wet[rest], dry[rest], g)
        lib = epo.apply(z)
        c = lib - lib.mean(axis=1, keepdims=True)
        unit = c / np.linalg.norm(c, axis=1, keepdims=True)
        kn = min(local.neighbours, lib.shape[0])
        for i in held:
            v = []
            for s in (wet[i], dry[i]):
                zs = epo.apply(s)
                cs = zs - zs.mean()
                nn = np.argpartition(-(unit @ (cs / np.linalg.norm(cs))), kn - 1)[:kn]
                v.append(_local_pls(lib[nn], yt[nn], zs[None, :], local)[0])
            out[i] = v[0] - v[1]
    return out


def _feasible_components(z: np.ndarray, y: np.ndarray, kmax: int, warnings: list[str]) -> int:
    """The ceiling lowered to what the spectra can carry (PLS stops when X has no variance left for y)."""
    while kmax > 1:
        try:
            fit_pls(z, y - y.mean(), kmax)
            return kmax
        except ValueError as e:
            found = re.search(r"PLS component (\d+):", str(e))
            if not found:
                raise
            kmax = max(1, int(found.group(1)) - 1)
            warnings.append(f"the spectra carry only {kmax} PLS components' worth of variance related to y: "
                            f"ceiling lowered to {kmax}")
    return kmax


@dataclass
class Choice:
    """What was fitted and why."""

    transform: TargetTransform
    g: int
    k: int
    method: str
    epo: Epo | None
    z: np.ndarray                     # calibration spectra after preprocessing and EPO
    cv_pred_t: np.ndarray             # CV predictions of the chosen method, model scale
    t2: np.ndarray                    # CV T² and Q at k (global PLS)
    q: np.ndarray
    shift_t: np.ndarray | None        # EPO shifts of the chosen method at k (model scale)
    record: dict[str, Any]
    local: Any = None                 # the local settings used (ceiling possibly set from k)


def choose(z0: np.ndarray, y: np.ndarray, *, scales: Sequence[str], max_components: int,
           n_components: int | None, fold: np.ndarray, seed: int, pairs: tuple[np.ndarray, np.ndarray] | None,
           epo_components: int | None, methods: Sequence[str], local: Any, alpha: float = ALPHA,
           local_ceiling_from_k: bool = False) -> Choice:
    """Run the cross-validations and make the choices listed in the module docstring.

    `local_ceiling_from_k`: the local models average `local.min_components` to k components, k the
    global model's chosen count (capped at neighbours - 2), instead of `local.max_components`.
    """
    n = y.shape[0]
    train_min = n - int(np.max(np.bincount(fold)))
    kmax = max(1, min(max_components, train_min - 1, z0.shape[1]))
    if n_components is not None:
        if not 1 <= n_components <= min(n - 1, z0.shape[1]):
            raise ValueError(f"{n_components} components: expected 1 to {min(n - 1, z0.shape[1])} for {n} samples")
        kmax = min(max(kmax, n_components), n - 1)
    lowered: list[str] = []
    kmax = _feasible_components(z0, y, kmax, lowered)
    if pairs is None:
        gs = [0]
    elif epo_components is not None:
        gs = [int(epo_components)]
    else:
        gs = list(range(1, min(MAX_EPO_COMPONENTS, pairs[0].shape[0] - 1) + 1))
    record: dict[str, Any] = {"rule": f"van der Voet (1994) randomization test, alpha {alpha}",
                              "max_components": max_components, "warnings": list(lowered)}
    per_scale: dict[str, dict[str, Any]] = {}
    for name in scales:
        tf = TargetTransform(name)
        yt = tf.forward(y)
        options = []
        for g in gs:
            epo = fit_epo(pairs[0], pairs[1], g) if g else None
            z = epo.apply(z0) if epo else z0
            cur = cv_curves(z, yt, kmax, fold)
            groups = [(cur.pred - yt[:, None]) ** 2]
            if epo is not None:
                cur.shift = pair_shifts(z0, yt, pairs[0], pairs[1], g, kmax, seed)
                groups.append(cur.shift**2)
            cur.sq_err = groups
            # Components on the calibration errors alone: with the wet-dry shift added the criterion
            # favoured one or two components (the shift is smallest there), which extrapolate badly
            # (soilspec-epo, 50 soils in 5 folds, 3 fold seeds: RMSE 1.60 against 0.90).
            kgroups = groups[:1]
            if n_components is not None:
                k, best = n_components, int(np.argmin(criterion(kgroups))) + 1
            else:
                ki, bi = parsimonious_choice(kgroups, alpha=alpha, seed=seed)
                k, best = ki + 1, bi + 1
            options.append((g, k, best, epo, z, cur))
        # EPO dimension: the simplest g whose errors at its own k are not significantly worse than the best g's.
        if len(options) > 1:
            stacked = [np.column_stack([o[5].sq_err[j][:, o[1] - 1] for o in options]) for j in range(2)]
            gi, _ = parsimonious_choice(stacked, alpha=alpha, seed=seed)
        else:
            gi = 0
        g, k, best, epo, z, cur = options[gi]
        pred_y = tf.inverse(cur.pred[:, k - 1])
        mse_y = float(np.mean((pred_y - y) ** 2))
        if cur.shift is not None:
            jac = 2.0 * np.maximum(cur.pred[:, k - 1], 0.0) if name == "sqrt" else np.ones(n)
            mse_y += float(np.mean(cur.shift[:, k - 1] ** 2)) * float(np.mean(jac**2))
        per_scale[name] = {"g": g, "k": k, "best": best, "epo": epo, "z": z, "cur": cur, "yt": yt,
                           "rmse_y": float(np.sqrt(mse_y)), "options": options}
    name = min(per_scale, key=lambda s: per_scale[s]["rmse_y"])
    ch = per_scale[name]
    g, k, epo, z, cur, yt = ch["g"], ch["k"], ch["epo"], ch["z"], ch["cur"], ch["yt"]
    record["target_scale"] = {s: round(v["rmse_y"], 6) for s, v in per_scale.items()}
    record["components"] = {"chosen": k, "cv_minimum_at": ch["best"],
                            "rmsecv_by_components": [round(float(v), 6) for v in
                                                     np.sqrt(np.mean(cur.sq_err[0], axis=0))]}
    if cur.shift is not None:
        record["components"]["moisture_shift_rms_by_components"] = [
            round(float(v), 6) for v in np.sqrt(np.mean(cur.shift**2, axis=0))]
    if ch["best"] == kmax and n_components is None and not lowered:
        record["warnings"].append(f"cross-validated error still lowest at the ceiling of {kmax} components: "
                                  f"refit with a larger max_components")
    if pairs is not None:
        record["epo_components"] = {"chosen": g, "tried": {str(o[0]): {
            "k": o[1], "wet_rmse_model_scale": round(float(np.sqrt(criterion([e[:, o[1] - 1] for e in
                                                                                o[5].sq_err]))), 6)}
            for o in ch["options"]}}
        if epo_components is None and g == gs[-1] and len(gs) > 1:
            record["warnings"].append(f"EPO components chosen at the largest tried ({g})")
    # Method: global, local or blend, compared on the model scale.
    if local_ceiling_from_k and any(m != "global" for m in methods):
        local = local_with_ceiling(local, k)
        record["local_components"] = {"min": local.min_components, "max": local.max_components,
                                      "rule": "max = the global model's chosen components (Shenk et al. 1997 "
                                              "LOCAL: predictions averaged over a range of component counts)"}
    pred_g = cur.pred[:, k - 1]
    cands: dict[str, tuple[np.ndarray, np.ndarray | None]] = {"global": (pred_g, None if cur.shift is None
                                                                          else cur.shift[:, k - 1])}
    skipped = None
    auto = len(methods) > 1
    if auto and n < 2 * local.neighbours:
        skipped = (f"{n} calibration samples: local PLS is tried from {2 * local.neighbours} on "
                   f"(twice its {local.neighbours} neighbours)")
    elif any(m != "global" for m in methods):
        pl = local_cv(z, yt, local, fold)
        sl = local_shifts(z0, yt, pairs[0], pairs[1], g, local, seed) if epo is not None else None
        cands["local"] = (pl, sl)
        cands["blend"] = (0.5 * (pl + pred_g), None if sl is None else 0.5 * (sl + cands["global"][1]))
    names = [m for m in METHODS if m in cands and m in methods] or ["global"]
    if len(names) == 3:
        # Local and blend cost the same on a gateway (the global model is computed anyway, for T² and Q):
        # the comparison that matters is global against the better of the two.
        lb = min(("local", "blend"), key=lambda m: float(np.mean((cands[m][0] - yt) ** 2)
                                                           + (0.0 if cands[m][1] is None else
                                                              float(np.mean(cands[m][1] ** 2)))))
        names = ["global", lb]
    if len(names) > 1:
        groups = [np.column_stack([(cands[m][0] - yt) ** 2 for m in names])]
        if cur.shift is not None:
            groups.append(np.column_stack([cands[m][1] ** 2 for m in names]))
        mi, bi = parsimonious_choice(groups, alpha=alpha, seed=seed)
        method = names[mi]
        crit = criterion(groups)
        reason = ("lowest cross-validated error" if mi == bi else
                  f"not significantly worse than {names[bi]} (randomization test p > {alpha}) and simpler")
        record["method"] = {"chosen": method, "reason": reason, "tried": names,
                            "rmsecv_model_scale": {m: round(float(np.sqrt(c)), 6) for m, c in zip(names, crit)}}
    else:
        method = names[0]
        record["method"] = {"chosen": method, "reason": skipped or "requested"}
    if skipped:
        record["method"]["local_skipped"] = skipped
    pred_t, shift_t = cands[method]
    tf = TargetTransform(name)
    if name != "none":
        tf = TargetTransform(name, float(np.mean((pred_t - yt) ** 2)))
    return Choice(tf, g, k, method, epo, z, pred_t, cur.t2[:, k - 1], cur.q[:, k - 1], shift_t, record, local)


def local_with_ceiling(local: Any, k: int) -> Any:
    """`local` with its component ceiling set to k (at least its minimum, at most neighbours - 2)."""
    from calibration.model import LocalSettings

    top = max(local.min_components, min(int(k), local.neighbours - 2))
    return LocalSettings(local.neighbours, local.min_components, top, local.blend)


def build(grid: np.ndarray, absorbance: np.ndarray, y: np.ndarray, chain_steps: list[dict[str, Any]],
          choice: Choice, *, model_id: str, version: str, target: str, unit: str, input: str, folds: int,
          seed: int, local: Any, pairs_abs: tuple[np.ndarray, np.ndarray] | None, requested_transform: str,
          level: float, extra: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The model file's description and arrays for the chosen model."""
    from calibration.model import FORMAT, FORMAT_VERSION

    tf, k = choice.transform, choice.k
    yt = tf.forward(y)
    pls = fit_pls(choice.z, yt, k)
    cv_pred = tf.inverse(choice.cv_pred_t)
    cvfm = figures_of_merit(y, cv_pred)
    fitted_t = pls.predict(choice.z)
    t2_limit, q_limit, domain_method = domain_limits(choice.t2, choice.q, level)
    moist = fit_moisture_index(grid, absorbance, level, wet_pairs=None if pairs_abs is None else pairs_abs[0])
    shift_var = float(np.mean(choice.shift_t**2)) if choice.shift_t is not None else 0.0
    # The wet-dry shift is not added to the uncertainty: on the paired soils it was negatively correlated with
    # the dry error (r = -0.49; wet RMSE 0.94 against 1.07 dry on held-out soils), and adding it over-covered
    # (±1u 87 %). Wet coverage is measured in docs/calibration.md instead.
    # Scores of the calibration spectra under the final model: the neighbour term of the uncertainty
    # finds a new spectrum's nearest calibration samples among them (calibration.uncertainty).
    scores = (choice.z - pls.x_mean) @ pls.rotations
    unc = fit_uncertainty(cv_pred, y, choice.t2, choice.q, k, sqrt_scale=tf.name == "sqrt", scores=scores,
                          seed=seed)
    local_meta = None
    if choice.method != "global":
        local_meta = {**vars(choice.local or local), "blend": choice.method == "blend"}
    meta: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "id": model_id, "version": str(version),
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "target": target, "unit": unit, "input": input,
        "preprocessing": chain_steps,
        "epo": {"n_components": choice.g, "pairs": int(pairs_abs[0].shape[0])} if choice.epo else None,
        "pls": {"n_components": k, "y_mean": pls.y_mean, "cv_folds": folds, "cv_seed": seed,
                "rmsecv_by_components": choice.record["components"]["rmsecv_by_components"]},
        "local": local_meta,
        "target_transform": {**tf.to_meta(), "requested": requested_transform,
                             "rmsecv_by_transform": choice.record["target_scale"]},
        "domain": {"level": level, "t2_limit": t2_limit, "q_limit": q_limit, "method": domain_method,
                   "flagged_cv": round(float(np.mean((choice.t2 > t2_limit) | (choice.q > q_limit))), 4)},
        "moisture": moisture_meta(moist, grid),
        "uncertainty": unc.to_meta(),
        "selection": choice.record,
        "training": {"n": int(len(y)), "rmsec": float(np.sqrt(np.mean((tf.inverse(fitted_t) - y) ** 2))),
                     "rmsecv": cvfm["rmse"], "r2cv": cvfm["r2"], "biascv": cvfm["bias"],
                     "rpd": cvfm["rpd"], "rpiq": cvfm["rpiq"],
                     "y_min": float(y.min()), "y_max": float(y.max()), "y_mean": float(y.mean())},
        "wavelength_range_nm": [float(grid[0]), float(grid[-1])],
        "bands": int(grid.shape[0]),
    }
    if choice.shift_t is not None:
        meta["training"]["moisture_shift_rms"] = float(np.sqrt(shift_var))
    if extra:
        meta["extra"] = extra
    arrays = {"wavelengths_nm": grid, "x_mean": pls.x_mean, "weights": pls.weights, "loadings": pls.loadings,
              "y_loadings": pls.y_loadings, "rotations": pls.rotations, "score_var": pls.score_var}
    if choice.epo is not None:
        arrays["epo_directions"] = choice.epo.directions
    if local_meta is not None:
        arrays["library_x"], arrays["library_y"] = choice.z, y
    if moist is not None:
        arrays["moisture_weights"] = moist.weights
    arrays.update(unc.arrays())
    return meta, arrays


def check_scales(transform: str, y: np.ndarray) -> list[str]:
    """The target scales to try for `transform` ("auto" tries √y only for non-negative y)."""
    if transform == "auto":
        return ["none", "sqrt"] if y.min() >= 0 else ["none"]
    if transform in TRANSFORMS:
        return [transform]
    raise ValueError(f"target transform {transform!r}: expected one of {', '.join(TRANSFORMS)} or 'auto'")
