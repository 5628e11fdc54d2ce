"""The compiled inputs of the kernel: plain arrays with named coordinates.

``rareflow.compile`` builds a :class:`Network` from the dataset and a scenario; the kernel reads
nothing else. Shapes are given with axis letters: ``T`` month, ``C``/``X`` country, ``E`` element
(the 17 rare earths plus ``other``, rare-earth oxide whose element split the dataset lacks),
``G`` magnet grade, ``S`` sector, ``I`` price item, ``R`` run.

Units: t REO per month for mining and separation, t of oxide (REO basis) for refined elements,
t of magnet for magnets; prices in US$/kg.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Parameters that may differ from run to run (uncertainty), each an array [R] or None.
RUN_PARAMETERS = ("price_elasticity", "switching_rate", "approval_scale", "leakage",
                  "demand_scale", "mine_scale", "magnet_capacity_scale",
                  "pipeline_delay_months", "pipeline_completion", "long_run_elasticity")

#: Inclusive ranges of the run parameters: shares in [0, 1], scales and delays not negative,
#: elasticities positive (prices divide by them) and at most 5, as the scenario's own
#: ``settings.price_elasticity``. The upper ends of scales (1,000x) and delays (1,200 months)
#: are numerical guards, far beyond any question the model answers: tonnes scaled near 1e300
#: overflow to inf and NaN, and a delay past the horizon is the same as 1,200 months.
RUN_PARAMETER_BOUNDS = {
    "price_elasticity": (1e-3, 5.0), "switching_rate": (0.0, 1.0),
    "approval_scale": (0.0, 1e3), "leakage": (0.0, 1.0), "demand_scale": (0.0, 1e3),
    "mine_scale": (0.0, 1e3), "magnet_capacity_scale": (0.0, 1e3),
    "pipeline_delay_months": (0.0, 1200.0), "pipeline_completion": (0.0, 1.0),
    "long_run_elasticity": (1e-3, 5.0),
}


@dataclass(frozen=True)
class RunParameters:
    """Per-run values [R] of the uncertain parameters; None keeps the scenario's value.

    ``approval_scale`` multiplies every licence approval share (capped at 1), ``leakage`` is the
    share of licence-blocked flow that leaks, ``demand_scale`` multiplies all demand,
    ``mine_scale`` all mine output and ``magnet_capacity_scale`` all magnet capacity.
    ``pipeline_delay_months`` delays, and ``pipeline_completion`` scales, the capacity of projects
    outside China that are under construction, ramping up or planned (``pipeline_capacity``);
    ``long_run_elasticity`` replaces the responses model's long-run price elasticity.
    """

    price_elasticity: np.ndarray | None = None
    switching_rate: np.ndarray | None = None
    approval_scale: np.ndarray | None = None
    leakage: np.ndarray | None = None
    demand_scale: np.ndarray | None = None
    mine_scale: np.ndarray | None = None
    magnet_capacity_scale: np.ndarray | None = None
    pipeline_delay_months: np.ndarray | None = None
    pipeline_completion: np.ndarray | None = None
    long_run_elasticity: np.ndarray | None = None

    def take(self, index: slice | np.ndarray) -> RunParameters:
        """The parameters of a subset of runs (a batch)."""
        return RunParameters(**{k: None if getattr(self, k) is None else getattr(self, k)[index]
                                for k in RUN_PARAMETERS})


@dataclass(frozen=True)
class Controls:
    """What scenarios (and later, export-control rules) change month by month.

    ``allowed_*`` hold the share of a bilateral flow that may pass [-] (1 = free, 0 = blocked);
    the diagonal (home trade) is always 1.
    """

    allowed_conc: np.ndarray  # [T, X, C]
    allowed_refined: np.ndarray  # [T, X, C, E]
    allowed_magnet: np.ndarray  # [T, X, C, G]
    stockpile_to_users: np.ndarray  # [T, C, G] t magnet released (+) or bought (-) per month
    home_first: np.ndarray  # [X] bool: exporter serves its own buyers first when short
    defense_first: np.ndarray  # [C] bool: defense users served first when short
    switching_rate: float = 0.1
    policy: object | None = None  # rareflow.policy.compile.PolicyTensors, or None: no rules


@dataclass(frozen=True)
class Network:
    """Everything the kernel needs, as arrays."""

    countries: tuple[str, ...]
    elements: tuple[str, ...]
    grades: tuple[str, ...]
    sectors: tuple[str, ...]
    months: tuple[str, ...]
    items: tuple[str, ...]

    # mining -> concentrate
    mine_capacity: np.ndarray  # [T, C] t REO / month
    mine_composition: np.ndarray  # [C, E] share of each element in mined REO; rows sum to 1
    conc_shares: np.ndarray  # [X, C] share of x's mine output shipped to c; rows sum to 1

    # separation
    sep_capacity: np.ndarray  # [T, C] t REO feed / month
    sep_heavy: np.ndarray  # [C] bool: can separate heavy rare earths
    heavy: np.ndarray  # [E] bool: element is a heavy rare earth
    sep_recovery: float  # [-] separated REO per REO fed
    secondary_supply: np.ndarray  # [T, C, E] t / month of unrecorded and secondary supply

    # refined trade and magnets
    refined_preference: np.ndarray  # [X, C] baseline import preferences for refined elements
    magnet_capacity: np.ndarray  # [T, C] t magnet / month
    grade_content: np.ndarray  # [G, E] t oxide (REO basis) per t of magnet
    oxide_to_metal: np.ndarray  # [E] t metal per t oxide
    magnet_preference: np.ndarray  # [X, C] baseline import preferences for magnets

    # demand
    magnet_need: np.ndarray  # [T, C, S] t magnet / month (zero for non-magnet sectors)
    oxide_need: np.ndarray  # [T, C, E] t / month for non-magnet uses
    sector_grade: np.ndarray  # [S] grade index of each magnet sector, -1 for non-magnet
    sector_is_defense: np.ndarray  # [S] bool
    user_cover_months: np.ndarray  # [S] target months of magnet stock held by users
    element_to_sector: np.ndarray  # [E, S] share of an element's non-magnet use by sector
    kg_per_unit: np.ndarray  # [S] kg magnet (or element) per unit; NaN where unknown
    unit_value_usd: np.ndarray  # [S] US$ per unit; NaN where unknown

    # prices
    item_elements: np.ndarray  # [I, E] weight of each element in an item's price
    base_price: np.ndarray  # [I] US$/kg in the base year
    price_elasticity: float  # [-] short-run price elasticity of demand (absolute value)
    price_smoothing: float  # [-] weight of the new month in the price signal

    notes: dict[str, str] = field(default_factory=dict)
    #: [3, T, C] capacity of projects outside China not yet operating in the base year (mining t
    #: REO, separation t REO feed, magnets t; per month), already inside the capacities above;
    #: None when not split out. Per-run delay and completion act on it.
    pipeline_capacity: np.ndarray | None = None

    @property
    def shape(self) -> dict[str, int]:
        return {
            "month": len(self.months), "country": len(self.countries),
            "element": len(self.elements), "grade": len(self.grades),
            "sector": len(self.sectors), "item": len(self.items),
        }

    def index(self, axis: str, code: str) -> int:
        coords = {"country": self.countries, "element": self.elements, "grade": self.grades,
                  "sector": self.sectors, "item": self.items, "month": self.months}[axis]
        return coords.index(code)


def free_controls(network: Network) -> Controls:
    """Controls under which nothing is restricted and nobody has priority."""
    t, c, e, g = (network.shape[k] for k in ("month", "country", "element", "grade"))
    return Controls(
        allowed_conc=np.ones((t, c, c)),
        allowed_refined=np.ones((t, c, c, e)),
        allowed_magnet=np.ones((t, c, c, g)),
        stockpile_to_users=np.zeros((t, c, g)),
        home_first=np.zeros(c, dtype=bool),
        defense_first=np.zeros(c, dtype=bool),
    )
