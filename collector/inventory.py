"""The rack inventory: where each rack sits, what its feeds can carry, which meters a site has.

Roll-ups (collector/rollup.py) read it to turn PDU readings into rack, row, room and site power
against capacity. It is loaded like every config (`telemetry.config.load`), so an error names
`file:line: key: problem`. Formulas: docs/schema.md, "Roll-ups".
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Literal

from pydantic import Field

from telemetry.config import KeyPath, StrictModel

RackKey = tuple[str, str, str]
"""(site, room, rack): how a device sample's tags name its rack."""


class Feed(StrictModel):
    """One power feed into a rack: the circuit's breaker rating and its supply."""

    rated_a: float = Field(gt=0)
    # Phase to neutral for one phase; line to line for three (P = sqrt(3) x V x I).
    voltage_v: float = Field(gt=0)
    phases: Literal[1, 3] = 1
    # Share of the rating a continuous load may use (NEC 210.19: 80%); default: the inventory's.
    derating: float | None = Field(default=None, gt=0, le=1)

    def rated_w(self) -> float:
        return self.rated_a * self.voltage_v * (math.sqrt(3) if self.phases == 3 else 1.0)

    def nominal_voltages_v(self) -> tuple[float, ...]:
        """What a PDU on this feed may measure: line to line, or (3 phases) line to neutral."""
        if self.phases == 3:
            return (self.voltage_v, self.voltage_v / math.sqrt(3))
        return (self.voltage_v,)


class Rack(StrictModel):
    site: str = Field(min_length=1)
    room: str = ""
    row: str = ""
    rack: str = Field(min_length=1)
    # By the value of the PDUs' `feed` tag (agent device `tags: {feed: A}`).
    feeds: dict[str, Feed] = Field(min_length=1)
    # 2N: each feed alone must carry the whole rack, so capacity is the smallest feed's.
    # False: the feeds share the load, so capacity is their sum.
    redundant: bool = True

    @property
    def key(self) -> RackKey:
        return (self.site, self.room, self.rack)


class Meter(StrictModel):
    """One reading to take from the stream: a field of the series that carry these tags."""

    measurement: str = Field(min_length=1)
    field: str = Field(min_length=1)
    tags: dict[str, str] = {}


class SiteMeters(StrictModel):
    """Facility meters for PUE. Each list is summed; every meter must report for a PUE."""

    facility: list[Meter] = Field(min_length=1)  # everything the site draws (utility input)
    it: list[Meter] = []  # IT load; empty: the sum of the site's rack power (from the PDUs)


class Inventory(StrictModel):
    derating: float = Field(default=0.8, gt=0, le=1)
    racks: list[Rack] = Field(min_length=1)
    sites: dict[str, SiteMeters] = {}

    def derated_w(self, feed: Feed) -> float:
        return feed.rated_w() * (feed.derating if feed.derating is not None else self.derating)

    def capacity_w(self, rack: Rack) -> float:
        feeds = [self.derated_w(feed) for feed in rack.feeds.values()]
        return min(feeds) if rack.redundant else sum(feeds)

    def problems(self) -> list[tuple[KeyPath, str]]:
        found: list[tuple[KeyPath, str]] = []
        keys = Counter(rack.key for rack in self.racks)
        for i, rack in enumerate(self.racks):
            if keys[rack.key] > 1:
                found.append(
                    (
                        ("racks", i, "rack"),
                        f"rack {rack.rack!r} appears more than once in site {rack.site!r}, "
                        f"room {rack.room!r}",
                    )
                )
        sites_with_racks = {rack.site for rack in self.racks}
        for site, meters in self.sites.items():
            if not meters.it and site not in sites_with_racks:
                found.append(
                    (
                        ("sites", site),
                        "no racks in this site and no `it` meters: PUE needs an IT load",
                    )
                )
        return found
