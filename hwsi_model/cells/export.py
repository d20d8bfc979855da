"""Nuclei as QuPath-importable GeoJSON and as a per-cell CSV."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from hwsi_model.atomic import atomic_output
from hwsi_model.data.stores.cells import FEATURES


def to_geojson(polygons: np.ndarray, features: np.ndarray, extra: dict | None = None) -> dict:
    """FeatureCollection with one ``detection`` per nucleus (QuPath's GeoJSON import).

    Args:
        polygons: ``[C, R, 2]`` (x, y) in the frame the user works in (level-0 px or image px).
        features: ``[C, F]`` values of :data:`FEATURES`, written as QuPath measurements.
        extra: per-cell columns (name -> ``[C]`` array) added to the measurements.
    """
    out = []
    for i in range(len(polygons)):
        ring = [[round(float(x), 2), round(float(y), 2)] for x, y in polygons[i]]
        ring.append(ring[0])
        measurements = {name: float(features[i, j]) for j, name in enumerate(FEATURES)}
        for name, values in (extra or {}).items():
            measurements[name] = float(values[i])
        out.append(
            {
                "type": "Feature",
                "id": f"nucleus-{i}",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {
                    "objectType": "detection",
                    "classification": {"name": "Nucleus", "color": [32, 32, 200]},
                    "measurements": measurements,
                },
            }
        )
    return {"type": "FeatureCollection", "features": out}


def write_geojson(path: str | Path, polygons: np.ndarray, features: np.ndarray, **extra) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(to_geojson(polygons, features, extra)))


def cell_dataframe(centroids: np.ndarray, features: np.ndarray, **extra) -> pd.DataFrame:
    """One row per nucleus: centroid (x, y) and the features (units in the column names)."""
    df = pd.DataFrame(features, columns=list(FEATURES))
    df.insert(0, "y", centroids[:, 1])
    df.insert(0, "x", centroids[:, 0])
    for name, values in extra.items():
        df.insert(0, name, values)
    return df


def write_csv(path: str | Path, df: pd.DataFrame) -> None:
    with atomic_output(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.4g")
