"""Cost of observing (noise + selection + asinh features) relative to the forward model.

    python benchmarks/observe.py [--n 100000] [--repeat 3] [--json bench_out/observe.json]

Same n Table-2 draws (popsed_jax.survey.mock.sample_table2) for both; each step jitted and timed
best of --repeat after a warm-up call. Prints one summary line, writes JSON
{n, forward_s, noise_select_features_s, ratio}.
"""
from __future__ import annotations

import argparse
import json
import os

import jax
import jax.numpy as jnp
from _timing import best_time




def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=16384)
    ap.add_argument("--json", default="bench_out/observe.json")
    a = ap.parse_args(argv)

    from popsed_jax.physics.forward import build_forward_model, forward_fluxes
    from popsed_jax.physics.photometry import SDSS_UGRIZ
    from popsed_jax.survey import mock
    from popsed_jax.survey.catalog import read_sdss_main
    from popsed_jax.survey.features import feature_stats, make_features, softening_from_noise, standardize
    from popsed_jax.survey.noise import add_noise, fit_noise_model
    from popsed_jax.survey.selection import hard_selection, soft_selection_weights

    nm = fit_noise_model(read_sdss_main())
    model = build_forward_model(filters=list(SDSS_UGRIZ), z_max=mock.Z_RANGE[1])
    theta = jnp.asarray(mock.sample_table2(a.n, 0), jnp.float32)
    soft = jnp.asarray(softening_from_noise(nm), jnp.float32)
    kb, mag_lim = 2, 17.77

    fwd = jax.jit(lambda t: forward_fluxes(model, t, chunk_size=a.chunk))

    @jax.jit
    def obs(flux, key):
        noisy, _ = add_noise(nm, flux, key)
        w = soft_selection_weights(noisy, kb, mag_lim)
        sel = hard_selection(noisy, kb, mag_lim)
        feats = make_features(noisy, soft)
        stats = feature_stats(feats, w)
        return standardize(feats, stats), w, sel

    t_fwd = best_time(fwd, theta, repeat=a.repeat)
    flux = jax.block_until_ready(fwd(theta))
    t_obs = best_time(obs, flux, jax.random.PRNGKey(0), repeat=a.repeat)
    res = dict(n=a.n, forward_s=t_fwd, noise_select_features_s=t_obs, ratio=t_obs / t_fwd,
               device=str(jax.devices()[0]))
    os.makedirs(os.path.dirname(a.json) or ".", exist_ok=True)
    with open(a.json, "w") as fh:
        json.dump(res, fh, indent=1)
    print(f"observe n={a.n}: forward {t_fwd:.3f} s, noise+selection+features {t_obs:.4f} s, "
          f"ratio {t_obs / t_fwd:.4f} ({res['device']}) -> {a.json}")
    return res


if __name__ == "__main__":
    main()
