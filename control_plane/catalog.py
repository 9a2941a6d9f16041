"""The built-in catalog of well-known models (catalog.yaml), validated once at load."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict

from control_plane.schemas import Capability, Prices, ProviderKind, Slug

CATALOG_PATH = Path(__file__).with_name("catalog.yaml")


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slug: Slug
    kind: ProviderKind
    upstream_model: str
    capabilities: list[Capability]
    prices: Prices


@dataclass(frozen=True, slots=True)
class CatalogModel:
    slug: str
    kind: str
    upstream_model: str
    capabilities: tuple[str, ...]
    prices: Prices


@cache
def catalog() -> dict[str, CatalogModel]:
    """Catalog models by slug, in file order."""
    raw = yaml.safe_load(CATALOG_PATH.read_text())
    entries = [_Entry.model_validate(item) for item in raw["models"]]
    return {
        e.slug: CatalogModel(e.slug, e.kind, e.upstream_model, tuple(e.capabilities), e.prices)
        for e in entries
    }


def for_kind(kind: str) -> list[CatalogModel]:
    return [entry for entry in catalog().values() if entry.kind == kind]
