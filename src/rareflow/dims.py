"""Canonical coordinates shared by the dataset, the simulator and the outputs.

Elements, countries, items and sectors are data (see ``rareflow.data``); only the structural
coordinates that code branches on live here.
"""

#: Supply-chain stages in flow order. ``use`` is the end-use sectors.
STAGES: tuple[str, ...] = ("mining", "separation", "metal", "magnet")

#: Country code of China, the exporter whose share the overview reports.
CHINA = "CHN"

#: Aggregate codes that are not countries: the world total and the rest of the world.
WORLD = "WLD"
REST_OF_WORLD = "ROW"

#: Price markets: China domestic and outside China.
MARKETS: tuple[str, ...] = ("china", "ex_china")

#: Calendar conversions used wherever rules state days or weeks and the model steps in months.
DAYS_PER_MONTH = 365.25 / 12
WEEKS_PER_MONTH = 52.0 / 12.0
