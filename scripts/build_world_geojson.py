#!/usr/bin/env python3
"""Build src/rareflow/report/world.geojson from the npm packages world-atlas and i18n-iso-countries.

Geometry: world-atlas@2.0.2, ``countries-110m.json`` (Natural Earth 4.1.0 Admin 0 countries,
1:110m, public domain), a quantized TopoJSON topology whose geometries carry the ISO 3166-1
numeric code as ``id`` and the country name as ``properties.name``.

Id mapping: i18n-iso-countries@7.14.0, ``codes.json`` (rows of [alpha-2, alpha-3, numeric, ...]).

Usage (no network access is needed once the two tarballs are on disk)::

    npm pack world-atlas@2.0.2 i18n-iso-countries@7.14.0
    python scripts/build_world_geojson.py world-atlas-2.0.2.tgz i18n-iso-countries-7.14.0.tgz \
        [-o src/rareflow/report/world.geojson] [--digits 2]

Only the Python standard library is used. The TopoJSON decoding follows the TopoJSON
specification: arcs are delta-encoded in quantized integer coordinates and are decoded with the
topology transform (scale, translate); a negative arc index ``~i`` (i.e. ``-i - 1``) means arc
``i`` traversed in reverse; consecutive arcs of a ring share their junction point, which is
dropped from every arc after the first.
"""

from __future__ import annotations

import argparse
import json
import tarfile
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "rareflow" / "report" / "world.geojson"


def read_json_from_tgz(path: str, member: str):
    with tarfile.open(path, "r:gz") as tar:
        f = tar.extractfile(member)
        if f is None:
            raise SystemExit(f"{member} not found in {path}")
        return json.load(f)


def decode_arcs(topology: dict) -> list[list[tuple[float, float]]]:
    """Return every arc as a list of absolute (lon, lat) positions."""
    transform = topology.get("transform")
    arcs = []
    for arc in topology["arcs"]:
        if transform is None:
            arcs.append([(float(p[0]), float(p[1])) for p in arc])
            continue
        (sx, sy), (tx, ty) = transform["scale"], transform["translate"]
        x = y = 0
        pts = []
        for p in arc:
            x += p[0]
            y += p[1]
            pts.append((x * sx + tx, y * sy + ty))
        arcs.append(pts)
    return arcs


def ring_coords(ring_arcs: list[int], arcs, digits: int) -> list[list[float]]:
    coords: list[tuple[float, float]] = []
    for k, idx in enumerate(ring_arcs):
        pts = arcs[idx] if idx >= 0 else arcs[~idx][::-1]
        coords.extend(pts if k == 0 else pts[1:])
    out: list[list[float]] = []
    for x, y in coords:
        p = [round(x, digits) + 0.0, round(y, digits) + 0.0]  # + 0.0 turns -0.0 into 0.0
        if not out or out[-1] != p:  # drop duplicates created by rounding
            out.append(p)
    if out[0] != out[-1]:
        out.append(list(out[0]))
    return out


def _unwrap(ring: list[list[float]]) -> list[list[float]]:
    """Make longitudes continuous (no jump larger than 180 degrees between neighbours)."""
    out = [list(ring[0])]
    for x, y in ring[1:]:
        px = out[-1][0]
        while x - px > 180:
            x -= 360
        while x - px < -180:
            x += 360
        out.append([x, y])
    return out


def _clip(ring: list[list[float]], c: float, keep_le: bool) -> list[list[float]]:
    """Sutherland-Hodgman clip of a closed ring against the half-plane x <= c (or x >= c)."""

    def inside(p):
        return p[0] <= c if keep_le else p[0] >= c

    def cut(a, b):
        t = (c - a[0]) / (b[0] - a[0])
        return [c, a[1] + t * (b[1] - a[1])]

    pts = ring[:-1]
    out = []
    for i, cur in enumerate(pts):
        prev = pts[i - 1]
        if inside(cur):
            if not inside(prev):
                out.append(cut(prev, cur))
            out.append(cur)
        elif inside(prev):
            out.append(cut(prev, cur))
    if out:
        out.append(list(out[0]))
    return out


def _clean(ring: list[list[float]], digits: int) -> list[list[float]] | None:
    out: list[list[float]] = []
    for x, y in ring:
        p = [round(x, digits) + 0.0, round(y, digits) + 0.0]  # + 0.0 turns -0.0 into 0.0
        if not out or out[-1] != p:
            out.append(p)
    if out and out[0] != out[-1]:
        out.append(list(out[0]))
    return out if len(out) >= 4 else None


Ring = list[list[float]]


def split_antimeridian(rings: list[Ring], digits: int) -> list[list[Ring]]:
    """Split a polygon whose exterior ring jumps across the antimeridian (lon +-180).

    Natural Earth cuts countries at +-180, but in world-atlas' topology a few rings (Fiji,
    Russia's Chukotka and Wrangel Island) run across the cut, jumping from -180 to +180. Such
    rings render as streaks across the whole map in a planar (equirectangular) projection, so
    they are cut into a western and an eastern polygon. Rings that circle the pole (Antarctica:
    the unwrapped ring does not close) are left untouched.
    """
    ext = rings[0]
    if all(abs(ext[k + 1][0] - ext[k][0]) <= 180 for k in range(len(ext) - 1)):
        return [rings]
    u = _unwrap(ext)
    if abs(u[-1][0] - u[0][0]) > 1e-9:  # encircles a pole
        return [rings]
    if len(rings) > 1:
        raise ValueError("splitting polygons with holes at the antimeridian is not implemented")
    lo, hi = min(p[0] for p in u), max(p[0] for p in u)
    if hi > 180:
        c, shift = 180.0, -360.0
    elif lo < -180:
        c, shift = -180.0, 360.0
    else:
        return [[_clean(u, digits)]]
    inner = _clip(u, c, keep_le=(c > 0))
    outer = [[x + shift, y] for x, y in _clip(u, c, keep_le=(c < 0))]
    return [[r] for r in (_clean(inner, digits), _clean(outer, digits)) if r]


def polygons(poly_arcs, arcs, digits) -> list:
    """Decode one TopoJSON polygon; returns a list of GeoJSON polygon coordinate arrays."""
    rings = [ring_coords(r, arcs, digits) for r in poly_arcs]
    # A valid linear ring needs >= 4 positions; drop rings that rounding collapsed.
    rings = [r for r in rings if len(r) >= 4]
    if not rings:
        return []
    return split_antimeridian(rings, digits)


def geometry(g: dict, arcs, digits: int) -> dict | None:
    if g["type"] == "Polygon":
        polys = polygons(g["arcs"], arcs, digits)
    elif g["type"] == "MultiPolygon":
        polys = [q for p in g["arcs"] for q in polygons(p, arcs, digits)]
    else:
        raise ValueError(f"unsupported geometry type {g['type']}")
    if not polys:
        return None
    if len(polys) == 1:
        return {"type": "Polygon", "coordinates": polys[0]}
    return {"type": "MultiPolygon", "coordinates": polys}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("world_atlas_tgz")
    ap.add_argument("iso_countries_tgz")
    ap.add_argument("-o", "--out", default=str(DEFAULT_OUT))
    ap.add_argument("--digits", type=int, default=2, help="decimal places kept (default 2)")
    args = ap.parse_args()

    topo = read_json_from_tgz(args.world_atlas_tgz, "package/countries-110m.json")
    codes = read_json_from_tgz(args.iso_countries_tgz, "package/codes.json")
    num_to_a3 = {row[2]: row[1] for row in codes}

    arcs = decode_arcs(topo)
    features = []
    missing = []
    for g in topo["objects"]["countries"]["geometries"]:
        name = g.get("properties", {}).get("name")
        num = g.get("id")
        iso3 = num_to_a3.get(num) if num is not None else None
        if iso3 is None:
            # Natural Earth features without an ISO 3166-1 code (N. Cyprus, Somaliland, Kosovo).
            missing.append((name, num))
        geom = geometry(g, arcs, args.digits)
        if geom is None:
            raise SystemExit(f"geometry of {name} vanished after rounding")
        features.append(
            {
                "type": "Feature",
                "properties": {"iso3": iso3, "name": name, "iso_numeric": num},
                "geometry": geom,
            }
        )
    features.sort(key=lambda f: (f["properties"]["iso3"] or "~", f["properties"]["name"]))
    fc = {"type": "FeatureCollection", "features": features}

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(fc, separators=(",", ":"), ensure_ascii=False)
    # one feature per line keeps diffs readable at negligible size cost
    text = text.replace(',{"type":"Feature"', ',\n{"type":"Feature"')
    out.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {out} ({out.stat().st_size} bytes, {len(features)} features)")
    for name, num in missing:
        print(f"  no iso3: {name} (id={num})")


if __name__ == "__main__":
    main()
