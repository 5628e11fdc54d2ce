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
