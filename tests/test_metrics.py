import pytest

from rareflow.metrics import herfindahl_hirschman


def test_hhi_monopoly_is_ten_thousand():
    assert herfindahl_hirschman([1.0]) == 10_000


def test_hhi_hand_worked_three_firms():
    # 0.6^2 + 0.3^2 + 0.1^2 = 0.46 -> 4,600 on the 0-10,000 scale
    assert herfindahl_hirschman([0.6, 0.3, 0.1]) == pytest.approx(4_600)


def test_hhi_equal_split_falls_with_number_of_firms():
    assert herfindahl_hirschman([0.25] * 4) == pytest.approx(2_500)
    assert herfindahl_hirschman([0.1] * 10) < herfindahl_hirschman([0.25] * 4)


def test_time_to_survive_by_hand():
    from rareflow.metrics import time_to_survive

    need = [10] * 8
    short = [0, 0, 0, 0, 2, 3, 0, 0]
    # disruption at month 1; first shortfall at month 4 -> 3 months survived
    assert time_to_survive(short, need, start=1) == 3
    assert time_to_survive([0] * 8, need, start=1) == float("inf")


def test_time_to_recover_by_hand():
    from rareflow.metrics import time_to_recover

    need = [10] * 10
    short = [0, 0, 5, 5, 0, 1, 0, 0, 0, 0]
    # from month 1: last short month is index 5 (4 after start) -> recovered after 5 months,
    # and months 6-8 are clean for the 3-month settle rule
    assert time_to_recover(short, need, start=1) == 5
    assert time_to_recover([0] * 10, need, start=1) == 0
    assert time_to_recover([0] * 8 + [1, 1], need, start=1) == float("inf")


def test_concentration_by_year_by_hand():
    import numpy as np

    from rareflow.metrics import concentration_by_year

    prod = np.zeros((2, 1, 2))
    prod[:, 0, 0] = [6, 6]  # China 12 t in the year
    prod[:, 0, 1] = [2, 2]  # other 4 t
    out = concentration_by_year(prod, ["2025-01", "2025-02"])
    assert out["2025"][0]["shares"].tolist() == [0.75, 0.25]
    assert out["2025"][0]["hhi"] == pytest.approx(0.75**2 * 1e4 + 0.25**2 * 1e4)
