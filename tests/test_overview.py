"""The supply-chain overview, on the real tables and on a hand-worked case."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rareflow import load_dataset
from rareflow.cli import app
from rareflow.overview import supply_overview


@pytest.fixture(scope="module")
def overview():
    return supply_overview(load_dataset(), 2024)


def test_china_mine_share_2024_matches_usgs(overview):
    # USGS: China 270,000 t of 380,000-390,000 t world output (69-71 %)
    mining = overview["stages"]["mining"]
    assert 0.68 <= mining["china_share"] <= 0.72
    assert 370_000 <= mining["world_t"] <= 400_000
    assert mining["top3"][0][0] == "CHN"


def test_china_separation_share_about_ninety_percent(overview):
    assert 0.85 <= overview["stages"]["separation"]["china_share"] <= 0.95


def test_china_magnet_share_ninety_to_ninety_four_percent(overview):
    assert 0.88 <= overview["stages"]["magnet"]["china_share"] <= 0.95


def test_mining_shares_are_the_table_rows_over_their_sum(overview):
    # recomputed here from the newest edition of mine_production.csv for 2024, so the
    # overview's arithmetic (and its choice of edition) is checked against the raw table
    mp = load_dataset().mine_production
    rows = mp[(mp["year"] == 2024) & (mp["country"] != "WLD")]
    rows = rows[rows["edition"] == sorted(rows["edition"].unique())[-1]]
    total = rows["value"].sum()
    mining = overview["stages"]["mining"]
    for country, share in mining["shares"].items():
        expected = rows.loc[rows["country"] == country, "value"].sum() / total
        assert share == pytest.approx(expected, abs=5e-5), country
    assert mining["hhi"] == pytest.approx(
        sum((v / total * 100) ** 2 for v in rows.groupby("country")["value"].sum()), abs=1.0)
    for stage, row in overview["stages"].items():
        if stage != "metal":  # metal: only shares are published (see docs/data.md)
            assert row["world_t"] and row["world_t"] > 0, stage
        assert row["sources"], stage


def test_hand_worked_overview(edit_table):
    # Replace mine output with three producers: shares .6/.3/.1, HHI 4,600.
    def change(header, rows):
        template = rows[0]
        rows.clear()
        for country, value in [("CHN", 60), ("USA", 30), ("AUS", 10), ("WLD", 100)]:
            row = dict(template)
            row.update(country=country, year="2030", edition="TEST", value=str(value),
                       estimate="false", note="")
            rows.append(row)

    data = edit_table("mine_production", change)
    result = supply_overview(load_dataset(data), 2030)["stages"]["mining"]
    assert result["shares"] == {"CHN": 0.6, "USA": 0.3, "AUS": 0.1}
    assert result["hhi"] == pytest.approx(4600)
    assert result["world_t"] == 100


def test_overview_json_contract():
    result = CliRunner().invoke(app, ["overview", "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["year"] == 2024
    assert set(body["stages"]) == {"mining", "separation", "metal", "magnet"}
    mining = body["stages"]["mining"]
    assert {"world_t", "unit", "shares", "hhi"} <= set(mining)
    assert mining["unit"] == "t REO"
    assert all(len(code) == 3 for code in mining["shares"])
