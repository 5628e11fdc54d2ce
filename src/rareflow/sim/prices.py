"""Prices per item and market (China domestic, outside China), moved by scarcity.

Notes
-----
Each market m (``china`` = buyers in China, ``ex_china`` = all others) and element e has a
scarcity ratio ``q = need / received`` of refined material this month (1 when fully served; need
includes the restocking that users' depleted inventories ask for, so falling cover raises it).
A smoothed log-signal ``z_t = (1 - lam) z_{t-1} + lam ln q_t`` drives the price through the
constant-elasticity inverse demand curve

.. math:: p_{m,i}(t) = p_{0,i} \\sum_e w_{i,e} \\exp(z_{m,e}(t) / \\varepsilon)

with ``w`` the element weights of item i (e.g. NdPr oxide = 0.75 Nd + 0.25 Pr) and ``eps`` the
short-run price elasticity of demand. The multiplier is capped at ``MAX_MULTIPLE``. Without the
responses model prices do not fall below the base-year level. With it, material held back at an
exporter's border by export rules counts as extra supply in the exporter's own market, so that
market may run a surplus (``q < 1``) and its price fall, down to ``1 / MAX_MULTIPLE`` of base;
substitution, demand and supply responses act through need and received
(:mod:`rareflow.sim.responses`).

References
----------
Binnemans, K. et al. (2013), "Rare-earth economics: the balance problem", JOM 65(7), 846-848:
shortages of a minor constituent give dramatic price rises because demand is very inelastic.
The elasticity value itself is an unsourced assumption (see docs/model.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rareflow.sim.network import Network

MAX_MULTIPLE = 50.0
_EPS = 1e-12


@dataclass
class PriceState:
    network: Network
    signal: np.ndarray  # [R, 2, E] smoothed log scarcity by market and element
    china_mask: np.ndarray  # [C] bool

    elasticity: np.ndarray | None = None  # [R,1,1] per-run elasticity, or None
    multiple: np.ndarray | None = None  # [R, 2, E] price / base price after the last update
    markets: np.ndarray | None = None  # [2, C] bool: China's market, the rest of the world

    @classmethod
    def start(cls, network: Network, runs: int,
              elasticity: np.ndarray | None = None) -> PriceState:
        china = np.array([c == "CHN" for c in network.countries])
        eps = (np.full(runs, network.price_elasticity) if elasticity is None
               else np.asarray(elasticity, float)).reshape(runs, 1, 1)
        start = np.zeros((runs, 2, len(network.elements)))
        return cls(network, start, china, eps, np.ones_like(start),
                   np.stack([china, ~china]))

    def update(self, need: np.ndarray, received: np.ndarray,
               held_back: np.ndarray | None = None) -> np.ndarray:
        """need, received [R,C,E] -> prices [R, I, 2] in US$/kg.

        ``held_back`` [R,C,E] (responses model only): material that producers in country c
        could not export because of export rules this month. It stays at home and presses on
        the home market as extra supply, so the scarcity ratio there may fall below one and the
        price below its base level (surplus inside, scarcity outside).
        """
        net = self.network
        markets = self.markets
        need_m = np.einsum("mc,rce->rme", markets, need)
        got_m = np.einsum("mc,rce->rme", markets, received)
        if held_back is not None:
            got_m = got_m + np.einsum("mc,rce->rme", markets, held_back)
        floor = np.maximum(got_m, need_m / MAX_MULTIPLE)
        ratio = np.divide(need_m, floor, out=np.ones_like(need_m), where=need_m > _EPS)
        lam = net.price_smoothing
        low = 1.0 / MAX_MULTIPLE if held_back is not None else 1.0
        self.signal = (1 - lam) * self.signal + lam * np.log(np.maximum(ratio, low))
        # np.clip, without its wrapper's overhead
        self.multiple = np.minimum(np.maximum(np.exp(self.signal / self.elasticity), low),
                                   MAX_MULTIPLE)
        item_multiple = np.einsum("ie,rme->rim", net.item_elements, self.multiple)
        return net.base_price[None, :, None] * item_multiple
