"""Regressors from features to MOS, following the scikit-learn estimator contract.

``__init__`` only stores its keyword arguments; ``fit`` validates them (``ValueError``),
standardises the features with the *training* mean and standard deviation (a zero-variance
column gets scale 1, like sklearn's StandardScaler, so it becomes all zeros), fits, and
returns ``self``; fitted state ends in ``_``. ``fit`` accepts optional validation data
(``X_val``, ``y_val``): ridge chooses its alpha on it, the MLP stops early on it.

torch is imported inside ``MLPRegressor.fit`` only, so importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator

import numpy as np
from scipy import linalg, stats
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_array, check_is_fitted, check_X_y

from iqa_store.registry import Registry

__all__ = ["REGRESSORS", "LinearRegressor", "MLPRegressor", "RidgeRegressor", "cv_folds", "gram_ridge_path",
           "ridge_path",
           "scale_from_moments", "score_alphas"]

# 13 values log-spaced over [1e-3, 1e3], the reiqa grid; a tuple so the default is immutable.
DEFAULT_ALPHAS: tuple[float, ...] = tuple(np.logspace(-3, 3, 13).tolist())

# Validation criteria for choosing alpha; each is scored so that higher is better.
_SELECT_BY = ("plcc", "rmse", "srcc")


def _mean_and_scale(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and standard deviations, with scale 1 for (numerically) constant columns."""
    mean = X.mean(axis=0)
    return mean, scale_from_moments(mean, X.var(axis=0), X.shape[0])


def scale_from_moments(mean: np.ndarray, var: np.ndarray, n: int) -> np.ndarray:
    """Standard deviations from column means and variances of ``n`` rows; 1 for constant columns.

    A constant column's computed variance is round-off, not zero (0.1 repeated has a std of
    ~1e-17); dividing by it would blow noise up to unit scale. We use sklearn's bound on that
    round-off (``sklearn.preprocessing._data._is_constant_feature``). The fit grid calls this
    with variances taken from a Gram matrix, so both paths share one rule.
    """
    eps = np.finfo(np.float64).eps
    constant = var <= n * eps * var + (n * mean * eps) ** 2
    return np.where(constant, 1.0, np.sqrt(np.maximum(var, 0.0)))


def cv_folds(n: int, cv: int, random_state: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(inside, held-out) row positions of the inner K-fold CV: one shuffle, cut in ``cv`` parts."""
    if n < 2 * cv:
        raise ValueError(f"inner {cv}-fold CV needs at least {2 * cv} training rows, got {n}")
    order = np.random.default_rng(random_state).permutation(n)
    return [(np.setdiff1d(order, held_out), held_out) for held_out in np.array_split(order, cv)]


def score_alphas(y_val: np.ndarray, predictions: np.ndarray, select_by: str) -> np.ndarray:
    """Criterion per column of ``predictions`` (one column per alpha), higher is better; an
    undefined correlation (a constant side) counts as the worst.

    All columns at once: ranking a whole matrix and one Pearson per column is ~20x faster than
    a ``scipy.stats.spearmanr`` call per alpha, which dominated inner-CV selection. The values
    are scipy's (average ranks for ties) to round-off; the tests compare them.
    """
    P = np.asarray(predictions, dtype=np.float64)
    y = np.asarray(y_val, dtype=np.float64)
    if select_by == "rmse":
        return -np.sqrt(np.mean((P - y[:, None]) ** 2, axis=0))
    if select_by == "srcc":
        P, y = stats.rankdata(P, axis=0), stats.rankdata(y)
    Pc, yc = P - P.mean(axis=0), y - y.mean()
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = (yc @ Pc) / np.sqrt((yc @ yc) * np.sum(Pc * Pc, axis=0))
    undefined = (np.ptp(P, axis=0) == 0) | (np.ptp(y) == 0) | np.isnan(scores)
    return np.where(undefined, -np.inf, np.clip(scores, -1.0, 1.0))


class _Standardised(RegressorMixin, BaseEstimator):
    """Shared input checks and training-statistics standardisation."""

    def _fit_scaler(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Checked (X, standardised X, y); sets n_features_in_, mean_ and scale_."""
        X, y = check_X_y(X, y, dtype=np.float64, y_numeric=True)
        if X.shape[0] < 2:
            raise ValueError(f"{type(self).__name__} needs at least 2 training rows, got n_samples={X.shape[0]}")
        self.n_features_in_ = X.shape[1]
        self.mean_, self.scale_ = _mean_and_scale(X)
        return X, self._standardise(X), y.astype(np.float64)

    def _standardise(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean_) / self.scale_

    def _check_predict_input(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "mean_")
        X = check_array(X, dtype=np.float64)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                             f"{self.n_features_in_} features as input")
        return self._standardise(X)

    def _check_validation(self, X_val: Any, y_val: Any) -> tuple[np.ndarray, np.ndarray] | None:
        if (X_val is None) != (y_val is None):
            raise ValueError("give both X_val and y_val, or neither")
        if X_val is None:
            return None
        X_val, y_val = check_X_y(X_val, y_val, dtype=np.float64, y_numeric=True)
        if X_val.shape[1] != self.n_features_in_:
            raise ValueError(f"X_val has {X_val.shape[1]} features, X has {self.n_features_in_}")
        if X_val.shape[0] < 2:
            raise ValueError(f"validation data needs at least 2 rows, got {X_val.shape[0]}")
        return self._standardise(X_val), y_val.astype(np.float64)


def ridge_path(Z: np.ndarray, y_centred: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """Ridge coefficients for every alpha from one eigendecomposition; shape (n_alphas, d).

    ``Z`` must be column-centred and ``y_centred`` centred (the intercept is then the mean
    of y). With n >= d we decompose the Gram matrix Z'Z = V diag(w) V', giving
    coef(a) = V diag(1 / (w + a)) V'Z'y; with n < d the kernel ZZ' = U diag(w) U', giving
    coef(a) = Z'U diag(1 / (w + a)) U'y. Both are the exact ridge solution, the same system
    sklearn's Ridge solves, and the Gram form lets a caller sum cached per-feature blocks.
    """
    alphas = np.asarray(alphas, dtype=np.float64)
    n, d = Z.shape
    if n >= d:
        return gram_ridge_path(Z.T @ Z, Z.T @ y_centred, alphas)
    w, U = np.linalg.eigh(Z @ Z.T)
    w = np.clip(w, 0.0, None)
    projected = U.T @ y_centred
    dual = (projected[None, :] / (w[None, :] + alphas[:, None])) @ U.T
    return dual @ Z


def gram_ridge_path(gram: np.ndarray, zty: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """Ridge coefficients for every alpha from the Gram matrix Z'Z and Z'y; shape (n_alphas, d)."""
    w, V = np.linalg.eigh(gram)
    w = np.clip(w, 0.0, None)  # round-off can make a zero eigenvalue slightly negative
    projected = V.T @ zty
    return (projected[None, :] / (w[None, :] + np.asarray(alphas)[:, None])) @ V.T


class RidgeRegressor(_Standardised):
    """Ridge regression with alpha chosen on validation data or by inner K-fold CV.

    Every alpha is solved from one eigendecomposition (``ridge_path``). ``select_by`` is the
    validation criterion ("srcc", "plcc" or "rmse"); ties go to the first alpha listed.
    Without validation data, alpha is chosen by the mean score over ``cv`` folds of the
    training rows (shuffled once with ``random_state``; each fold standardised with its own
    training statistics), then the model is refitted on all training rows.

    Fitted: ``alpha_``, ``coef_`` (on standardised features), ``intercept_``, ``mean_``,
    ``scale_``, ``alpha_scores_`` (criterion per alpha).
    """

    def __init__(self, alphas: Any = DEFAULT_ALPHAS, select_by: str = "srcc", cv: int = 5,
                 random_state: int = 0) -> None:
        self.alphas = alphas
        self.select_by = select_by
        self.cv = cv
        self.random_state = random_state

    def validated_params(self) -> np.ndarray:
        """Checks every parameter (``ValueError``); returns the alphas as a float array."""
        alphas = np.atleast_1d(np.asarray(self.alphas, dtype=np.float64))
        if alphas.ndim != 1 or alphas.size == 0 or not np.all(np.isfinite(alphas)) or np.any(alphas <= 0):
            raise ValueError(f"alphas must be a non-empty list of positive numbers, got {self.alphas!r}")
        if self.select_by not in _SELECT_BY:
            raise ValueError(f"select_by must be one of {list(_SELECT_BY)}, got {self.select_by!r}")
        if not isinstance(self.cv, (int, np.integer)) or isinstance(self.cv, bool) or self.cv < 2:
            raise ValueError(f"cv must be an integer >= 2, got {self.cv!r}")
        return alphas

    def fit(self, X: Any, y: Any, X_val: Any = None, y_val: Any = None) -> "RidgeRegressor":
        alphas = self.validated_params()
        X, Z, y = self._fit_scaler(X, y)
        validation = self._check_validation(X_val, y_val)
        if len(alphas) == 1:
            scores = np.zeros(1)  # nothing to choose
        elif validation is not None:
            scores = _alpha_scores(Z, y, *validation, alphas, self.select_by)
        else:
            scores = self._cv_scores(X, y, alphas)
        best = int(np.argmax(scores))
        y_mean = y.mean()
        self.alpha_ = float(alphas[best])
        self.coef_ = ridge_path(Z, y - y_mean, alphas[best:best + 1])[0]
        self.intercept_ = float(y_mean)
        self.alpha_scores_ = scores
        return self

    def _cv_scores(self, X: np.ndarray, y: np.ndarray, alphas: np.ndarray) -> np.ndarray:
        per_fold = []
        for inside, held_out in cv_folds(X.shape[0], int(self.cv), self.random_state):
            mean, scale = _mean_and_scale(X[inside])
            per_fold.append(_alpha_scores((X[inside] - mean) / scale, y[inside],
                                          (X[held_out] - mean) / scale, y[held_out], alphas, self.select_by))
        return np.mean(per_fold, axis=0)

    def predict(self, X: Any) -> np.ndarray:
        return self._check_predict_input(X) @ self.coef_ + self.intercept_


def _alpha_scores(Z: np.ndarray, y: np.ndarray, Z_val: np.ndarray, y_val: np.ndarray,
                  alphas: np.ndarray, select_by: str) -> np.ndarray:
    """Validation criterion for each alpha."""
    y_mean = y.mean()
    return score_alphas(y_val, Z_val @ ridge_path(Z, y - y_mean, alphas).T + y_mean, select_by)


class LinearRegressor(_Standardised):
    """Ordinary least squares on standardised features, minimum-norm when rank-deficient.

    ``tol`` is the relative singular-value cut-off of ``scipy.linalg.lstsq`` (sklearn's
    LinearRegression uses the same), so rank-deficient fits give the same predictions.
    """

    def __init__(self, tol: float = 1e-6) -> None:
        self.tol = tol

    def fit(self, X: Any, y: Any, X_val: Any = None, y_val: Any = None) -> "LinearRegressor":
        if not isinstance(self.tol, (int, float)) or not 0 <= self.tol < 1:
            raise ValueError(f"tol must be a number in [0, 1), got {self.tol!r}")
        _, Z, y = self._fit_scaler(X, y)
        self._check_validation(X_val, y_val)  # accepted for a uniform grid interface, unused
        y_mean = y.mean()
        self.coef_ = linalg.lstsq(Z - Z.mean(axis=0), y - y_mean, cond=self.tol)[0]
        self.intercept_ = float(y_mean - Z.mean(axis=0) @ self.coef_)
        return self

    def predict(self, X: Any) -> np.ndarray:
        return self._check_predict_input(X) @ self.coef_ + self.intercept_


# MLP training budget for epochs="auto": about _AUTO_STEPS Adam steps (Adam at lr 1e-3 moves
# a weight by at most ~1e-3 per step, so a head needs thousands of steps to reach a useful
# sigmoid slope), at most _MAX_EPOCHS epochs, and at most _AUTO_WORK multiply-adds of the
# first layer (rows x epochs x inputs x width), never fewer than _MIN_EPOCHS epochs. Small
# heads then get their ~2000 steps in well under a second (250 x 36 BRISQUE: 1000 epochs of
# 2 batches, ~0.5 s), while an 8000 x 1300 CLIP fit with 512 hidden units stops at 11 epochs
# (~700 steps, ~6-10 s on one CPU thread); on synthetic data of that shape longer training
# did not improve held-out SRCC.
_AUTO_STEPS = 2000
_AUTO_WORK = 6e10
_MIN_EPOCHS = 5
_MAX_EPOCHS = 1000
_AUTO_LINEAR_MAX_DIM = 64  # inputs this small get the paper's 2-layer (linear) BRISQUE head


@contextlib.contextmanager
def _torch_settings(n_threads: int) -> Iterator[None]:
    """Deterministic kernels and ``n_threads`` CPU threads for the fit, restored afterwards.

    Both are process-wide torch settings. One thread is the default because these heads are
    small: on two shared cores, intra-op threads spin against each other (we measured an
    epoch of the 8000 x 1300 fit at 1 s on one thread and 8 s on two when the cores were
    busy), and a fixed thread count also keeps CPU results identical across machines.
    Parallelism belongs to the grid's executor, across cells.
    """
    import torch

    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)


class MLPRegressor(_Standardised):
    """The onuoha2024 head: in -> hidden -> 1 with ReLU and a sigmoid output, MSE, Adam.

    Targets are the training MOS min-max scaled to [0, 1]; predictions are mapped back, so
    they lie within the training MOS range. ``hidden="auto"`` is 512, or no hidden layer
    (linear then sigmoid) for inputs of at most 64 dimensions; ``hidden=0`` forces the
    latter. ``epochs="auto"`` follows the budget above; ``n_threads`` torch CPU threads are
    used during the fit (see ``_torch_settings``). With validation data, the weights of
    the epoch with the lowest validation loss are kept and training stops after
    ``patience`` epochs without improvement. Seeded and deterministic on CPU.

    Fitted: ``module_`` (torch), ``hidden_``, ``n_epochs_``, ``best_epoch_``,
    ``loss_curve_``, ``val_loss_curve_``, ``y_min_``, ``y_max_``, ``mean_``, ``scale_``.
    """

    def __init__(self, hidden: int | str = "auto", epochs: int | str = "auto", lr: float = 1e-3,
                 batch_size: int = 128, weight_decay: float = 0.0, patience: int = 20, seed: int = 0,
                 n_threads: int = 1) -> None:
        self.hidden = hidden
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.patience = patience
        self.seed = seed
        self.n_threads = n_threads

    def _validate_params(self) -> None:
        def positive_int(value: Any) -> bool:
            return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1

        if not (self.hidden == "auto" or (isinstance(self.hidden, (int, np.integer)) and self.hidden >= 0)):
            raise ValueError(f"hidden must be 'auto' or an integer >= 0, got {self.hidden!r}")
        if not (self.epochs == "auto" or positive_int(self.epochs)):
            raise ValueError(f"epochs must be 'auto' or a positive integer, got {self.epochs!r}")
        if not positive_int(self.batch_size):
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if not positive_int(self.n_threads):
            raise ValueError(f"n_threads must be a positive integer, got {self.n_threads!r}")
        if not positive_int(self.patience):
            raise ValueError(f"patience must be a positive integer, got {self.patience!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a number >= 0, got {self.weight_decay!r}")
        if not isinstance(self.seed, (int, np.integer)):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")

    def _n_epochs(self, n_rows: int, n_inputs: int) -> int:
        if self.epochs != "auto":
            return int(self.epochs)
        steps_per_epoch = math.ceil(n_rows / min(self.batch_size, n_rows))
        by_steps = min(math.ceil(_AUTO_STEPS / steps_per_epoch), _MAX_EPOCHS)
        by_work = math.floor(_AUTO_WORK / (n_rows * n_inputs * max(self.hidden_, 1)))
        return max(min(by_steps, by_work), _MIN_EPOCHS)

    def fit(self, X: Any, y: Any, X_val: Any = None, y_val: Any = None) -> "MLPRegressor":
        import torch

        self._validate_params()
        _, Z, y = self._fit_scaler(X, y)
        validation = self._check_validation(X_val, y_val)
        self.y_min_, self.y_max_ = float(y.min()), float(y.max())
        if self.y_max_ == self.y_min_:
            raise ValueError("training MOS is constant; the [0, 1] target scaling is undefined")
        d = Z.shape[1]
        self.hidden_ = (512 if d > _AUTO_LINEAR_MAX_DIM else 0) if self.hidden == "auto" else int(self.hidden)

        with _torch_settings(int(self.n_threads)), torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.seed))  # weight initialisation, without touching global RNG state
            layers = ([torch.nn.Linear(d, self.hidden_), torch.nn.ReLU(), torch.nn.Linear(self.hidden_, 1)]
                      if self.hidden_ else [torch.nn.Linear(d, 1)])
            module = torch.nn.Sequential(*layers, torch.nn.Sigmoid())
            self._train(module, Z, y, validation)
        self.module_ = module.eval()
        return self

    def _scaled_targets(self, y: np.ndarray) -> np.ndarray:
        return (y - self.y_min_) / (self.y_max_ - self.y_min_)

    def _train(self, module: Any, Z: np.ndarray, y: np.ndarray,
               validation: tuple[np.ndarray, np.ndarray] | None) -> None:
        import torch

        inputs = torch.from_numpy(Z.astype(np.float32))
        targets = torch.from_numpy(self._scaled_targets(y).astype(np.float32))
        if validation is not None:
            val_inputs = torch.from_numpy(validation[0].astype(np.float32))
            val_targets = torch.from_numpy(self._scaled_targets(validation[1]).astype(np.float32))
        n = inputs.shape[0]
        batch = min(int(self.batch_size), n)
        shuffler = torch.Generator().manual_seed(int(self.seed))  # a local generator for the batch order
        optimiser = torch.optim.Adam(module.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        loss_fn = torch.nn.MSELoss()
        self.loss_curve_, self.val_loss_curve_ = [], []
        best_loss, best_state, self.best_epoch_ = math.inf, None, 0
        for epoch in range(self._n_epochs(n, inputs.shape[1])):
            module.train()
            order = torch.randperm(n, generator=shuffler)
            total = 0.0
            for start in range(0, n, batch):
                rows = order[start:start + batch]
                optimiser.zero_grad()
                loss = loss_fn(module(inputs[rows]).squeeze(1), targets[rows])
                loss.backward()
                optimiser.step()
                total += loss.item() * len(rows)
            self.loss_curve_.append(total / n)
            self.n_epochs_ = epoch + 1
            if validation is None:
                continue
            module.eval()
            with torch.no_grad():
                val_loss = float(loss_fn(module(val_inputs).squeeze(1), val_targets))
            self.val_loss_curve_.append(val_loss)
            if val_loss < best_loss:
                best_loss, self.best_epoch_ = val_loss, epoch + 1
                best_state = {k: v.clone() for k, v in module.state_dict().items()}
            elif epoch + 1 - self.best_epoch_ >= self.patience:
                break
        if best_state is not None:
            module.load_state_dict(best_state)
        else:
            self.best_epoch_ = self.n_epochs_

    def predict(self, X: Any) -> np.ndarray:
        import torch

        Z = self._check_predict_input(X)
        with _torch_settings(int(self.n_threads)), torch.no_grad():
            scaled = self.module_(torch.from_numpy(Z.astype(np.float32))).squeeze(1).double().numpy()
        return self.y_min_ + scaled * (self.y_max_ - self.y_min_)


REGRESSORS: Registry = Registry("regressor")
REGRESSORS.register("ridge", RidgeRegressor, help="ridge, alpha in 1e-3..1e3 chosen on val (or inner 5-fold CV) by SRCC")
REGRESSORS.register("linear", LinearRegressor, help="ordinary least squares (minimum norm)")
REGRESSORS.register("mlp", MLPRegressor, help="onuoha2024 head: in-512-1 ReLU, sigmoid output, Adam, MSE on [0,1] MOS")
