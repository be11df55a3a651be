"""`meter dev`'s banner and demo subscription follow the catalogue it was given."""

from __future__ import annotations

from pathlib import Path

from meter.billing.catalogue import load
from meter.dev import DEMO_CUSTOMER, _banner, default_catalogue, demo_meter, demo_price

# A licensed price first, then a metered one on a meter that is not the example's.
CUSTOM = """
meters:
  tokens:
    display_name: Tokens
    formula: sum
products:
  seats:
    name: Seats
    prices:
      seat_monthly: {currency: usd, interval: month, unit_amount: 900}
  llm:
    name: LLM
    prices:
      tokens_monthly: {currency: usd, interval: month, meter: tokens, unit_amount: 2}
"""

LICENSED_ONLY = """
products:
  seats:
    name: Seats
    prices:
      seat_monthly: {currency: usd, interval: month, unit_amount: 900}
"""


def _catalogue(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "catalogue.yaml"
    path.write_text(text)
    return path


def test_the_banner_posts_to_the_catalogues_first_metered_price(tmp_path: Path) -> None:
    catalogue = load(_catalogue(tmp_path, CUSTOM))
    price = demo_price(catalogue)
    assert price is not None
    assert price.lookup_key == "tokens_monthly"
    banner = _banner("http://h:1", "k", None, {}, demo_meter(catalogue))
    assert f'"customer": "{DEMO_CUSTOMER}", "meter": "tokens"' in banner
    assert "api_calls" not in banner


def test_the_example_catalogues_banner_names_its_meter() -> None:
    catalogue = load(default_catalogue())
    banner = _banner("http://h:1", "k", None, {}, demo_meter(catalogue))
    assert '"meter": "api_calls"' in banner


def test_a_catalogue_without_a_metered_price_has_no_usage_curl(tmp_path: Path) -> None:
    catalogue = load(_catalogue(tmp_path, LICENSED_ONLY))
    price = demo_price(catalogue)
    assert price is not None
    assert price.lookup_key == "seat_monthly"
    banner = _banner("http://h:1", "k", None, {}, demo_meter(catalogue))
    assert "/v1/events" not in banner
    assert "no metered price" in banner


def test_the_default_catalogue_is_the_packaged_copy_outside_a_checkout(tmp_path: Path) -> None:
    assert default_catalogue().is_file()
    outside = default_catalogue(tmp_path)
    assert outside.parts[-3:] == ("meter", "_data", "catalogue.example.yaml")
