"""Noise model, selection and loss features, checked against the real SDSS catalog."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from popsed_jax.survey import catalog as C
from popsed_jax.physics import photometry
from popsed_jax.products import plots
from popsed_jax.survey import features, noise, selection

# Stated tolerance: model sigma quantiles (16/50/84%) within 6% of the catalog's,
# for the whole sample and within each flux tercile, in every band.
SIGMA_QUANTILE_RTOL = 0.06


@pytest.fixture(scope="module")
def sdss():
    return C.read_sdss_main()


@pytest.fixture(scope="module")
def model(sdss):
    return noise.fit_noise_model(sdss)


def _quantile_errors(cat, sig):
    """Max relative quantile error per band: whole sample and flux terciles."""
    out = []
    for k in range(cat.n_bands):
        f, e, s = cat.flux[:, k], cat.flux_err[:, k], sig[:, k]
        groups = [np.ones(cat.n, bool)]
        t = np.quantile(f, [0, 1 / 3, 2 / 3, 1])
        groups += [(f >= t[i]) & (f <= t[i + 1]) for i in range(3)]
        err = [np.abs(np.quantile(s[g], [.16, .5, .84]) / np.quantile(e[g], [.16, .5, .84])
                      - 1).max() for g in groups]
        out.append(max(err))
    return np.array(out)


# ----------------------------------------------------------------- noise model

def test_noise_model_reproduces_catalog_errors(sdss, model):
    flux = jnp.asarray(sdss.flux, jnp.float32)
    sig = np.asarray(noise.sample_noise_sigma(model, flux, jax.random.PRNGKey(0)))
    err = _quantile_errors(sdss, sig)
    assert np.all(err < SIGMA_QUANTILE_RTOL), dict(zip(sdss.bands, err.round(4)))
    # the scatter matters: the median law alone misses the 16/84% quantiles
    med = np.asarray(noise.noise_sigma_median(model, flux))
    assert np.all(_quantile_errors(sdss, med) > SIGMA_QUANTILE_RTOL)
    # objects noisy in one band are noisy in the others, in the catalog and the model
    pos = (sdss.flux > 0).all(1)
    r_cat = np.corrcoef(np.log(sdss.flux_err[pos] / med[pos]), rowvar=False)
    r_mod = np.corrcoef(np.log(sig[pos] / med[pos]), rowvar=False)
    off = ~np.eye(5, dtype=bool)
    assert np.all(r_cat[off] > 0.15)
    assert np.max(np.abs(r_mod - r_cat)) < 0.05, (r_cat.round(2), r_mod.round(2))


def test_noise_model_physics(model):
    a, b, c = np.asarray(model.var_coeffs).T
    assert np.all(a > 0) and np.all(b >= 0) and np.all(c >= 0)
    grid = jnp.asarray(np.logspace(-1, 4, 60)[:, None] * np.ones(5), jnp.float32)
    med = np.asarray(noise.noise_sigma_median(model, grid))
    assert np.all(med > 0)
    # sigma grows with flux; S/N grows with flux (Poisson / calibration limited)
    assert np.all(np.diff(med, axis=0) > -1e-3 * med[1:])
    assert np.all(np.diff(np.asarray(grid) / med, axis=0) > 0)
    # bands' errors are positively correlated (shared sky and object size)
    corr = np.asarray(model.chol) @ np.asarray(model.chol).T
    assert np.allclose(np.diag(corr), 1, atol=1e-5) and np.all(corr > 0.2)


def test_save_load_identical_draws(model, sdss, tmp_path):
    noise.save_noise_model(model, tmp_path / "noise.json")
    back = noise.load_noise_model(tmp_path / "noise.json")
    assert back.bands == model.bands
    flux = jnp.asarray(sdss.flux[:500], jnp.float32)
    key = jax.random.PRNGKey(3)
    a, b = noise.add_noise(model, flux, key), noise.add_noise(back, flux, key)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert noise.NoiseModel.from_dict(model.to_dict()).to_dict() == model.to_dict()


def test_flux_space_noise_is_unbiased_and_keeps_negatives(model):
    n, f0 = 200_000, 0.05  # far fainter than the sky noise (sigma ~0.2-1.4 nmgy)
    flux = jnp.full((n, 5), f0, jnp.float32)
    noisy, sigma = noise.add_noise(model, flux, jax.random.PRNGKey(7))
    noisy, sigma = np.asarray(noisy, np.float64), np.asarray(sigma, np.float64)
    assert np.all((noisy < 0).mean(0) > 0.3)  # f0 is 0.04-0.3 sigma
    se = noisy.std(0) / np.sqrt(n)
    assert np.all(np.abs(noisy.mean(0) - f0) < 4 * se)
    pull = (noisy - f0) / sigma
    assert np.allclose(pull.std(0), 1, atol=0.01)
    # the noise scale is exact: scale=0 returns the input
    same, s0 = noise.add_noise(model, flux[:10], jax.random.PRNGKey(7), scale=0.0)
    assert np.array_equal(same, flux[:10]) and np.all(s0 == 0)


def test_noise_jit_and_gradients(model, sdss):
    flux = jnp.asarray(sdss.flux[:256], jnp.float32)
    flux = flux.at[0].set(jnp.array([0.0, -1.0, 0.0, 1e-3, -5.0], jnp.float32))
    key = jax.random.PRNGKey(1)
    fast = jax.jit(noise.add_noise)(model, flux, key)
    slow = noise.add_noise(model, flux, key)
    assert np.allclose(fast[0], slow[0], rtol=1e-5, atol=1e-4)
    g = jax.grad(lambda f: noise.add_noise(model, f, key)[0].sum())(flux)
    assert np.all(np.isfinite(g))
    assert abs(float(g.mean()) - 1.0) < 0.05  # d(f + sigma eps)/df ~ 1 on average
    gs = jax.grad(lambda f: noise.sample_noise_sigma(model, f, key).sum())(flux)
    assert np.all(np.isfinite(gs))
    gm = jax.grad(lambda f: noise.noise_sigma_median(model, f).sum())(flux[1:])
    assert np.all(np.isfinite(gm)) and float(jnp.median(gm)) > 0  # sigma rises with flux


def test_plot_noise_model(model, sdss, tmp_path):
    path = plots.plot_noise_model(model, sdss, tmp_path / "noise.png", max_points=2000)
    assert path.exists() and path.stat().st_size > 10_000


# ----------------------------------------------------------------- selection

def test_parse_limit():
    bands = tuple(f"sdss2001-{b}" for b in "ugriz")
    assert selection.parse_limit("r<17.77", bands) == ("sdss2001-r", 17.77)
    assert selection.parse_limit(" r <= 17.5 ", bands) == ("sdss2001-r", 17.5)
    assert selection.parse_limit("sdss2001-z<20") == ("sdss2001-z", 20.0)
    with pytest.raises(ValueError, match="'q' not among"):
        selection.parse_limit("q<17", bands)
    with pytest.raises(ValueError, match="cannot parse"):
        selection.parse_limit("r>17", bands)
    with pytest.raises(ValueError, match="ambiguous"):
        selection.parse_limit("r<17")  # many surveys have an r band


def test_soft_selection_tends_to_hard_cut():
    cat = C.read_sdss_main(flux="PETROFLUX")
    flux = jnp.asarray(cat.flux, jnp.float32)
    hard = np.asarray(selection.hard_selection(flux, 2, 17.77))
    mag = photometry.flux_to_mag(cat.flux[:, 2])
    for width, frac_tol in [(0.05, 0.01), (0.01, 0.003), (1e-3, 0.0005)]:
        w = np.asarray(selection.soft_selection_weights(flux, 2, 17.77, width))
        assert np.all((w >= 0) & (w <= 1))
        far = np.abs(mag - 17.77) > 20 * width
        assert np.max(np.abs(w[far] - hard[far])) < 1e-6
        assert abs(w.mean() - hard.mean()) < frac_tol
    # the boundary is at the limit: weight 1/2 there
    f_lim = jnp.full((1, 5), photometry.mag_to_flux(17.77), jnp.float32)
    assert abs(float(selection.soft_selection_weights(f_lim, 2, 17.77)[0]) - 0.5) < 1e-3


def test_soft_selection_gradients():
    mags = jnp.array([17.6, 17.75, 17.77, 17.8, 17.9])
    flux = jnp.ones((5, 5)) * photometry.mag_to_flux(17.0)
    flux = flux.at[:, 2].set(10 ** (-0.4 * (mags - 22.5)))
    fn = jax.jit(lambda f: selection.soft_selection_weights(f, 2, 17.77, 0.05).sum())
    g = np.asarray(jax.grad(fn)(flux))
    assert np.all(np.isfinite(g)) and np.all(g[:, 2] > 0)
    assert np.all(g[:, [0, 1, 3, 4]] == 0)
    odd = jnp.array([[1.0, 1.0, 0.0, 1.0, 1.0], [1.0, 1.0, -3.0, 1.0, 1.0]])
    w = selection.soft_selection_weights(odd, 2, 17.77)
    assert np.all(np.isfinite(w)) and np.all(np.asarray(w) < 1e-20)
    assert np.all(np.isfinite(jax.grad(lambda f: selection.soft_selection_weights(f, 2, 17.77)
                                       .sum())(odd)))


# ----------------------------------------------------------------- features

def test_asinh_mag_matches_pogson_at_high_snr(model):
    b = jnp.asarray(features.softening_from_noise(model), jnp.float32)
    sigma0 = np.asarray(b) * photometry.F0_NMGY / 1.042
    snr = np.logspace(np.log10(50), 5, 40)[:, None]
    flux = jnp.asarray(snr * sigma0, jnp.float32)
    diff = np.asarray(features.asinh_mag(flux, b)) - photometry.flux_to_mag(np.asarray(flux, np.float64))
    assert np.max(np.abs(diff)) < 1e-3
    # at low S/N the two differ, and asinh stays finite through zero and below
    x = jnp.asarray(np.linspace(-5, 5, 101)[:, None] * sigma0, jnp.float32)
    m = np.asarray(features.asinh_mag(x, b))
    assert np.all(np.isfinite(m)) and np.all(np.diff(m, axis=0) < 0)
    g = jax.grad(lambda f: features.asinh_mag(f, b).sum())(x)
    assert np.all(np.isfinite(g))
    # zero flux gives m = -(2.5/ln10) ln b
    m0 = np.asarray(features.asinh_mag(jnp.zeros((1, 5)), b))[0]
    assert np.allclose(m0, -2.5 / np.log(10) * np.log(np.asarray(b)), atol=1e-4)


def test_features_standardize_and_jit(sdss, model):
    flux = jnp.asarray(sdss.flux, jnp.float32)
    soft = features.softening_from_noise(model)
    x = features.make_features(flux, soft)
    stats = features.feature_stats(x)
    z = jax.jit(features.make_features, static_argnames="colours")(flux, soft, stats)
    assert np.allclose(z.mean(0), 0, atol=1e-3) and np.allclose(z.std(0), 1, atol=1e-3)
    col = features.make_features(flux, soft, colours=True)
    assert col.shape == (sdss.n, 5)
    assert np.allclose(col[:, 0], x[:, 2]) and np.allclose(col[:, 2], x[:, 1] - x[:, 2])
    # weights: uniform weights give the unweighted stats
    mw, sw = features.feature_stats(x, jnp.ones(sdss.n))
    assert np.allclose(mw, stats[0], rtol=1e-5) and np.allclose(sw, stats[1], rtol=1e-4)


def test_softmax_of_log_weights_is_finite_far_below_the_limit():
    """A population ~3 mag below r = 17.77: every sigmoid weight underflows (~1e-26), yet the
    log-space normalised weights and their gradients stay finite and equal the exact ratio."""
    import jax
    import jax.numpy as jnp

    r = jnp.array([20.6, 20.7, 20.9, 21.0])
    flux = jnp.stack([10 ** (-0.4 * (r - 22.5))] * 5, 1).astype(jnp.float32)
    naive = selection.soft_selection_weights(flux, 2, 17.77)
    assert float(jnp.sum(naive)) < 1e-20
    g_naive = jax.grad(lambda f: (selection.soft_selection_weights(f, 2, 17.77) / selection.soft_selection_weights(f, 2, 17.77).sum())[0])(flux)
    assert not np.all(np.isfinite(np.asarray(g_naive)))  # the failure this guards against
    w = jax.nn.softmax(selection.soft_selection_log_weights(flux, 2, 17.77))
    w = np.asarray(w)
    assert abs(w.sum() - 1) < 1e-5 and np.all(np.diff(w) < 0)
    # sigmoid(x) ~ exp(x) in the tail: 0.1 mag fainter = exp(-2) less weight (the asinh
    # magnitude is ~0.01 mag off Pogson 3 mag below the limit, hence the loose tolerance)
    assert abs(np.log(w[1] / w[0]) + 2.0) < 0.15
    g = jax.grad(lambda f: jax.nn.softmax(selection.soft_selection_log_weights(f, 2, 17.77))[0])(flux)
    assert np.all(np.isfinite(np.asarray(g)))
