"""Forecast baselines a model must beat, scored on exactly the steps the model is scored on.

For next-step forecasting (y[t] = x[t+1]):
    naive           y_hat[t] = x[t]            (the last value seen)
    seasonal-naive  y_hat[t] = x[t + 1 - m]    (the value one season ago; the last value while the window
                                                holds less than a season)
The season m is the dataset's known period (airline: 12 months), else the lag in 2..MAX_SEASON with the
lowest RMSE on the training split (never chosen on test data).
"""

from __future__ import annotations

import numpy as np

from .data import Dataset, Split

MAX_SEASON = 64


def naive(split: Split) -> np.ndarray:
    """(N, T, C) last-value forecasts."""
    return split.X.copy()


def seasonal_naive(split: Split, m: int) -> np.ndarray:
    """(N, T, C) forecasts from one season back (falls back to the last value before a season is seen)."""
    pred = split.X.copy()
    if 1 <= m - 1 < split.X.shape[1]:
        pred[:, m - 1 :] = split.X[:, : split.X.shape[1] - (m - 1)]
    return pred


def rmse(pred: np.ndarray, split: Split, mask: np.ndarray | None = None) -> float:
    """RMSE in raw units over the scored steps (and `mask`, (N, T) bool, if given), every channel."""
    sel = split.scored() if mask is None else split.scored() & mask
    err = (pred - split.y)[sel]  # (n, C)
    return float(np.sqrt(np.mean(err.astype(np.float64) ** 2))) if err.size else float("nan")


def fit_season(train: Split) -> int:
    """The lag with the lowest seasonal-naive RMSE on the training split (every lag on the same steps)."""
    top = min(MAX_SEASON, train.X.shape[1] // 2)
    if top < 2:
        return 1
    same = np.arange(train.X.shape[1])[None, :] >= top - 1  # steps where every candidate lag exists
    errs = {m: rmse(seasonal_naive(train, m), train, same) for m in range(2, top + 1)}
    return min(errs, key=errs.get)


def forecast_baselines(ds: Dataset, split: Split | None = None) -> dict:
    """{'naive': rmse, 'seasonal_naive': rmse, 'season': m, 'season_from': ...} on `split` (default: test)."""
    split = ds.test if split is None else split
    m = ds.season or fit_season(ds.train)
    return {
        "naive": rmse(naive(split), split),
        "seasonal_naive": rmse(seasonal_naive(split, m), split),
        "season": int(m),
        "season_from": "dataset" if ds.season else "fitted on the training split",
        "scored_steps": int(split.scored().sum()),
    }


def describe(test_rmse: float, b: dict) -> str:
    """One line: the model's RMSE beside both baselines."""
    return (
        f"test rmse {test_rmse:.4g} on {b['scored_steps']} unseen steps (naive {b['naive']:.4g}, "
        f"seasonal-naive {b['seasonal_naive']:.4g} with season {b['season']})"
    )
