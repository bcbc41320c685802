"""scripts/landmark_smoothing.py: the filter copy behaves like src/core/one_euro.rs (scale
invariance, jitter reduction, NaN resets) and the objective's premise holds: against a reference
with independent noise, the squared error ranks tracks as the error against the truth does."""
import numpy as np

import landmark_smoothing as LS


def _face_track(n=200, seed=0, noise=0.01, scale=100.0):
    """A synthetic 468-point track: a face of inter-ocular distance ~`scale` px swaying slowly,
    plus i.i.d. noise of `noise` x IOD."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(-1, 1, (468, 2)).astype(np.float64)
    base[33], base[263] = [-0.5, 0.0], [0.5, 0.0]
    t = np.arange(n)[:, None, None] / 30.0
    truth = (base[None] + 0.2 * np.sin(2 * np.pi * 0.5 * t)) * scale
    raw = truth + rng.normal(0, noise * scale, truth.shape)
    ref = truth + np.random.default_rng(seed + 1).normal(0, noise * scale, truth.shape)
    return truth, raw, ref


def test_error_against_an_independent_noisy_reference_ranks_like_the_truth():
    truth, raw, ref = _face_track()
    smooth = LS.one_euro(raw, 1 / 30, 2.0, 30.0, 8.0, True)
    # The filter reduces the error to the truth on a slowly moving, noisy track ...
    assert LS.sq_error(smooth, truth) < 0.9 * LS.sq_error(raw, truth)
    # ... and the noisy reference shows the same ranking, offset by its own noise variance.
    offset = LS.sq_error(truth, ref)
    for track in (raw, smooth):
        assert abs(LS.sq_error(track, ref) - LS.sq_error(track, truth) - offset) < 0.15 * offset
    assert LS.sq_error(smooth, ref) < LS.sq_error(raw, ref)


def test_speed_per_iod_makes_the_filter_resolution_independent_and_nan_resets():
    _, raw, _ = _face_track(scale=60.0)
    a = LS.one_euro(raw, 1 / 30, 2.0, 30.0, 8.0, True)
    b = LS.one_euro(2 * raw, 1 / 30, 2.0, 30.0, 8.0, True)
    np.testing.assert_allclose(b, 2 * a, rtol=1e-6, atol=1e-6)
    # A lost frame resets the filter: the next frame passes through unchanged.
    gap = raw.copy()
    gap[50] = np.nan
    y = LS.one_euro(gap, 1 / 30, 2.0, 30.0, 8.0, True)
    np.testing.assert_array_equal(y[51], gap[51])
    # Still-face jitter is measured on the stillest frames and drops with smoothing.
    assert LS.still_jitter(a, raw) < LS.still_jitter(raw, raw)
