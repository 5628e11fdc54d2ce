"""Concentration and resilience metrics.

Pure functions on shares and series; documented with their formula and source.
"""

from __future__ import annotations

from collections.abc import Iterable


def herfindahl_hirschman(shares: Iterable[float]) -> float:
    """Herfindahl-Hirschman index of market shares, on the 0-10,000 scale.

    Parameters
    ----------
    shares : iterable of float
        Market shares as fractions [-] that sum to one.

    Returns
    -------
    float
        HHI [-], 10,000 for a monopoly, near 0 for an atomised market.

    Notes
    -----
    .. math:: HHI = \\sum_i (100 s_i)^2

    Aggregates such as "rest of world" are counted as one producer, which overstates the index
    slightly; the US agencies treat markets above 1,800 as highly concentrated.

    References
    ----------
    U.S. Department of Justice and Federal Trade Commission, Merger Guidelines (2023), section 2.1,
    https://www.justice.gov/atr/2023-merger-guidelines
    """
    return float(sum((100.0 * s) ** 2 for s in shares))
