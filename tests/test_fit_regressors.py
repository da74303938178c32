import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.base import clone
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_estimator

from iqa_store.fit.regressors import REGRESSORS, LinearRegressor, MLPRegressor, RidgeRegressor, ridge_path, score_alphas

ALPHAS = np.logspace(-3, 3, 13)


def make_data(n, d, seed=0, noise=1.0):
    rng = np.random.default_rng(seed)
    # Columns on different scales and offsets, so standardisation matters.
    X = rng.normal(size=(n, d)) * rng.uniform(0.1, 50, d) + rng.uniform(-100, 100, d)
    y = (X - X.mean(0)) / X.std(0) @ rng.normal(size=d) + rng.normal(0, noise, n) + 3.0
    return X, y


def standardise(train, *others):
    mean, scale = train.mean(0), train.std(0)
    scale = np.where(scale > 0, scale, 1.0)
    return [(a - mean) / scale for a in (train, *others)]


def assert_close(a, b):
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-8 * max(1.0, float(np.abs(b).max())))


@pytest.mark.parametrize("n, d", [(120, 15), (40, 90)])  # Gram and kernel branches
@pytest.mark.parametrize("alpha", [1e-3, 1.0, 1e3])
def test_ridge_equals_sklearn(n, d, alpha):
    X, y = make_data(n + 30, d)
    ours = RidgeRegressor(alphas=[alpha]).fit(X[:n], y[:n])
    Z, Z_test = standardise(X[:n], X[n:])
    theirs = Ridge(alpha=alpha).fit(Z, y[:n])
    assert ours.alpha_ == alpha
    assert_close(ours.coef_, theirs.coef_)
    assert ours.intercept_ == pytest.approx(theirs.intercept_, rel=1e-10)
    assert_close(ours.predict(X[n:]), theirs.predict(Z_test))


def test_ridge_path_solves_every_alpha_like_sklearn():
    X, y = make_data(80, 10)
    (Z,) = standardise(X)
    path = ridge_path(Z, y - y.mean(), ALPHAS)
    for alpha, coef in zip(ALPHAS, path):
        assert_close(coef, Ridge(alpha=alpha).fit(Z, y).coef_)


def brute_force_best(Z, y, Z_val, y_val, score):
    values = [score(y_val, Ridge(alpha=a).fit(Z, y).predict(Z_val)) for a in ALPHAS]
    return ALPHAS[int(np.argmax(values))], values


def test_ridge_picks_alpha_maximising_validation_srcc():
    X, y = make_data(200, 60, seed=3, noise=4.0)  # noisy and wide, so the best alpha is interior
    model = RidgeRegressor().fit(X[:100], y[:100], X_val=X[100:140], y_val=y[100:140])
    Z, Z_val, Z_test = standardise(X[:100], X[100:140], X[140:])
    best, values = brute_force_best(Z, y[:100], Z_val, y[100:140], lambda a, b: stats.spearmanr(a, b).statistic)
    assert len(set(np.round(values, 12))) > 1, "the test needs alphas that differ"
    assert model.alpha_ == best
    assert_close(model.predict(X[140:]), Ridge(alpha=best).fit(Z, y[:100]).predict(Z_test))


def test_ridge_select_by_rmse():
    X, y = make_data(200, 60, seed=4, noise=4.0)
    model = RidgeRegressor(select_by="rmse").fit(X[:100], y[:100], X[100:], y[100:])
    Z, Z_val = standardise(X[:100], X[100:])
    best, _ = brute_force_best(Z, y[:100], Z_val, y[100:], lambda a, b: -np.sqrt(np.mean((a - b) ** 2)))
    assert model.alpha_ == best


def test_ridge_inner_cv_matches_sklearn_cross_validation():
    X, y = make_data(150, 40, seed=5, noise=3.0)
    model = RidgeRegressor(cv=5, random_state=2).fit(X, y)
    # Reference: the documented folds (one permutation, cut in 5), each fold standardised on
    # its own training rows, mean validation SRCC per alpha.
    order = np.random.default_rng(2).permutation(150)
    folds = [(np.setdiff1d(order, held), held) for held in np.array_split(order, 5)]
    means = []
    for alpha in ALPHAS:
        pipe = make_pipeline(StandardScaler(), Ridge(alpha=alpha))
        means.append(np.mean([stats.spearmanr(y[te], pipe.fit(X[tr], y[tr]).predict(X[te])).statistic
                              for tr, te in folds]))
    assert model.alpha_ == ALPHAS[int(np.argmax(means))]
    np.testing.assert_allclose(model.alpha_scores_, means, atol=1e-10)


def test_linear_equals_sklearn_including_rank_deficient():
    X, y = make_data(60, 8)
    cases = {
        "full rank": X,
        "duplicate column": np.hstack([X, X[:, :2] * 3.0]),
        "constant column": np.hstack([X, np.full((60, 1), 7.0)]),
        "wide": np.hstack([X, make_data(60, 70, seed=9)[0]]),
    }
    for name, data in cases.items():
        ours = LinearRegressor().fit(data[:45], y[:45])
        Z, Z_test = standardise(data[:45], data[45:])
        theirs = LinearRegression().fit(Z, y[:45])
        np.testing.assert_allclose(ours.predict(data[45:]), theirs.predict(Z_test), rtol=1e-7, atol=1e-7,
                                   err_msg=name)


def test_standardisation_uses_training_statistics_and_handles_constant_columns():
    X, y = make_data(50, 5)
    X[:, 2] = 5.0
    X[:, 3] = 0.1  # its computed std is round-off (~1e-17), not zero
    model = RidgeRegressor(alphas=[1.0]).fit(X[:40], y[:40])
    scaler = StandardScaler().fit(X[:40])
    np.testing.assert_allclose(model.mean_, scaler.mean_)
    np.testing.assert_allclose(model.scale_, scaler.scale_)
    assert model.scale_[2] == model.scale_[3] == 1.0
    np.testing.assert_allclose(model.coef_[2:4], 0.0, atol=1e-10)
    reference = Ridge(alpha=1.0).fit(scaler.transform(X[:40]), y[:40])
    assert_close(model.predict(X[40:]), reference.predict(scaler.transform(X[40:])))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.SkipTestWarning")
@pytest.mark.parametrize("estimator", [RidgeRegressor(), LinearRegressor()], ids=["ridge", "linear"])
def test_sklearn_estimator_checks(estimator):
    check_estimator(estimator)


@pytest.mark.parametrize("name", REGRESSORS.names())
def test_clone_and_params(name):
    template = REGRESSORS.get(name)()
    if name == "mlp":
        template.set_params(epochs=3)  # keep the fit short; also exercises set_params
    copy = clone(template)
    assert type(copy) is type(template) and copy.get_params() == template.get_params()
    X, y = make_data(80, 5)
    fitted = template.fit(X, y)
    assert fitted is template
    fresh = clone(fitted)
    assert not hasattr(fresh, "coef_") and not hasattr(fresh, "mean_")


@pytest.mark.parametrize("estimator, message", [
    (RidgeRegressor(alphas=[-1.0, 1.0]), "alphas"),
    (RidgeRegressor(alphas=[]), "alphas"),
    (RidgeRegressor(select_by="r2"), "select_by"),
    (RidgeRegressor(cv=1), "cv"),
    (LinearRegressor(tol=2.0), "tol"),
    (MLPRegressor(hidden=-3), "hidden"),
    (MLPRegressor(epochs=0), "epochs"),
    (MLPRegressor(lr=0.0), "lr"),
    (MLPRegressor(batch_size=1.5), "batch_size"),
])
def test_invalid_parameters_raise_in_fit(estimator, message):
    X, y = make_data(40, 3)
    with pytest.raises(ValueError, match=message):
        estimator.fit(X, y)


def test_validation_data_must_be_complete():
    X, y = make_data(40, 3)
    with pytest.raises(ValueError, match="X_val and y_val"):
        RidgeRegressor().fit(X, y, X_val=X)
    with pytest.raises(ValueError, match="features"):
        RidgeRegressor().fit(X, y, X_val=X[:, :2], y_val=y)


def nonlinear_data(n, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    y = 50 + 10 * np.sin(1.5 * X[:, 0]) + 8 * X[:, 1] ** 2 + rng.normal(0, 0.5, n)
    return X, y


def test_mlp_is_deterministic_per_seed():
    X, y = nonlinear_data(200)
    torch.manual_seed(123)
    first = MLPRegressor(hidden=32, epochs=20, seed=1).fit(X, y).predict(X)
    torch.manual_seed(456)  # the global RNG state must not matter
    torch.rand(3)
    second = MLPRegressor(hidden=32, epochs=20, seed=1).fit(X, y).predict(X)
    other = MLPRegressor(hidden=32, epochs=20, seed=2).fit(X, y).predict(X)
    np.testing.assert_array_equal(first, second)
    assert np.max(np.abs(first - other)) > 1e-3


def test_mlp_leaves_global_torch_state_alone():
    X, y = nonlinear_data(50)
    state, deterministic = torch.random.get_rng_state(), torch.are_deterministic_algorithms_enabled()
    MLPRegressor(hidden=8, epochs=2).fit(X, y)
    assert torch.equal(state, torch.random.get_rng_state())
    assert torch.are_deterministic_algorithms_enabled() == deterministic


def test_mlp_learns_a_nonlinear_relation():
    X, y = nonlinear_data(1200, seed=1)
    model = MLPRegressor(hidden=64).fit(X[:1000], y[:1000])
    prediction = model.predict(X[1000:])
    assert stats.spearmanr(y[1000:], prediction).statistic > 0.9
    # A linear model cannot: the relation is not monotonic in X[:, 1].
    linear = LinearRegressor().fit(X[:1000], y[:1000]).predict(X[1000:])
    assert stats.spearmanr(y[1000:], linear).statistic < 0.8
    # Sigmoid output on min-max scaled targets keeps predictions inside the training MOS range.
    assert y[:1000].min() <= prediction.min() and prediction.max() <= y[:1000].max()


def test_mlp_auto_head():
    X, y = make_data(100, 36)
    small = MLPRegressor(epochs=2).fit(X, y)
    assert small.hidden_ == 0 and sum(isinstance(m, torch.nn.Linear) for m in small.module_) == 1
    X, y = make_data(100, 65)
    large = MLPRegressor(epochs=2).fit(X, y)
    assert large.hidden_ == 512 and large.module_[0].out_features == 512


def test_mlp_early_stopping_keeps_best_validation_epoch():
    X, y = nonlinear_data(300, seed=2)
    model = MLPRegressor(hidden=64, epochs=200, patience=5, lr=1e-2).fit(X[:100], y[:100], X[100:200], y[100:200])
    assert len(model.val_loss_curve_) == model.n_epochs_
    assert model.val_loss_curve_[model.best_epoch_ - 1] == min(model.val_loss_curve_)
    restored = ((model.predict(X[100:200]) - model.y_min_) / (model.y_max_ - model.y_min_)
                - (y[100:200] - model.y_min_) / (model.y_max_ - model.y_min_))
    assert np.mean(restored ** 2) == pytest.approx(min(model.val_loss_curve_), rel=1e-4)


def test_mlp_rejects_constant_targets():
    X, _ = make_data(20, 3)
    with pytest.raises(ValueError, match="constant"):
        MLPRegressor(epochs=1).fit(X, np.ones(20))


def test_score_alphas_equals_scipy_per_column():
    rng = np.random.default_rng(8)
    y = np.round(rng.normal(size=60), 1)  # ties in y
    predictions = y[:, None] + rng.normal(size=(60, 5)) * [0.1, 1, 3, 10, 0]
    predictions[:, 2] = np.round(predictions[:, 2])  # ties in a prediction
    predictions[:, 4] = 7.0  # constant: undefined correlation, the worst score
    references = {"srcc": lambda a, b: stats.spearmanr(a, b).statistic,
                  "plcc": lambda a, b: stats.pearsonr(a, b).statistic,
                  "rmse": lambda a, b: -np.sqrt(np.mean((a - b) ** 2))}
    for name, reference in references.items():
        scores = score_alphas(y, predictions, name)
        expected = [reference(y, predictions[:, k]) for k in range(4)]
        np.testing.assert_allclose(scores[:4], expected, rtol=1e-12, err_msg=name)
        assert scores[4] == (-np.inf if name != "rmse" else -np.sqrt(np.mean((y - 7.0) ** 2)))
