"""The comparison the equivalence tests share: two implementations agree to 1e-9."""

from __future__ import annotations

import numpy as np

RTOL = 1e-9


def assert_equivalent(actual, expected) -> None:
    """Same shape, NaN in the same places, and values equal to ``RTOL`` relative to each value
    and, for values that cancel to about zero, to the array's scale."""
    actual, expected = np.asarray(actual, float), np.asarray(expected, float)
    assert actual.shape == expected.shape
    assert np.array_equal(np.isnan(actual), np.isnan(expected))
    a, e = np.nan_to_num(actual), np.nan_to_num(expected)
    scale = max(float(np.abs(e).max(initial=0.0)), 1e-300)
    np.testing.assert_allclose(a, e, rtol=RTOL, atol=RTOL * scale * 1e-3)
