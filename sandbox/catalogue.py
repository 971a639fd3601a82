"""The sandbox bank's fixed catalogue: its regions and districts, the names it gives customers, and
its campaigns as the bank's systems know them (the dbt seeds)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

SEEDS_DIR = Path(__file__).resolve().parent.parent / "dbt_project" / "seeds"

REGIONS = {
    "LIMA": (
        0.46,
        [
            "MIRAFLORES",
            "SAN ISIDRO",
            "SURCO",
            "SAN JUAN DE LURIGANCHO",
            "LOS OLIVOS",
            "ATE",
            "COMAS",
        ],
    ),
    "AREQUIPA": (0.09, ["CERCADO", "CAYMA", "YANAHUARA"]),
    "LA LIBERTAD": (0.08, ["TRUJILLO", "VICTOR LARCO"]),
    "PIURA": (0.07, ["PIURA", "CASTILLA", "SULLANA"]),
    "CALLAO": (0.07, ["BELLAVISTA", "LA PERLA", "VENTANILLA"]),
    "LAMBAYEQUE": (0.06, ["CHICLAYO", "LAMBAYEQUE"]),
    "CUSCO": (0.06, ["CUSCO", "WANCHAQ", "SANTIAGO"]),
    "JUNIN": (0.06, ["HUANCAYO", "EL TAMBO"]),
    "ICA": (0.05, ["ICA", "CHINCHA ALTA"]),
}
FIRST_NAMES = [
    "JOSE", "LUIS", "CARLOS", "JUAN", "JORGE", "MIGUEL", "CESAR", "VICTOR", "ROSA", "MARIA",
    "ANA", "CARMEN", "LUCIA", "JULIA", "SOFIA", "VALERIA", "DIEGO", "ALONSO", "CAMILA", "FIORELLA",
]  # fmt: skip
LAST_NAMES = [
    "QUISPE", "FLORES", "SANCHEZ", "RODRIGUEZ", "GARCIA", "ROJAS", "MAMANI", "HUAMAN", "CHAVEZ",
    "TORRES", "RAMOS", "VARGAS", "CASTILLO", "MENDOZA", "DIAZ", "RIOS", "GUTIERREZ", "PAREDES",
]  # fmt: skip


@dataclass(frozen=True)
class Campaign:
    campaign_id: str
    product: str
    channels: tuple[str, ...]


def load_campaigns(seeds_dir: Path = SEEDS_DIR) -> list[Campaign]:
    """The campaigns database as the bank's systems know it (the dbt seeds)."""
    with open(seeds_dir / "campaign_channels.csv") as fh:
        rows = sorted(csv.DictReader(fh), key=lambda r: (r["campaign_id"], int(r["preference"])))
    channels: dict[str, list[str]] = {}
    for row in rows:
        channels.setdefault(row["campaign_id"], []).append(row["channel"])
    with open(seeds_dir / "campaigns.csv") as fh:
        return [
            Campaign(
                r["campaign_id"],
                r["product"],
                tuple(channels.get(r["campaign_id"], ())),
            )
            for r in csv.DictReader(fh)
        ]
