"""Environment monitors whose recordings need the profile language's text features, against
the shared recordings served by snmpsim: ServersCheck gateways (what a port measures is only
in its user-given name), Asentria SiteBoss (the temperature's unit only in its display text)
and the Rittal CMC III PSM modules (found by their variable names)."""

from __future__ import annotations

import pytest

from rackwatch.localservices import Running
from tests.test_profiles_ups_env import elements, points, poll

pytestmark = pytest.mark.integration


async def test_serverscheck_ports_are_read_by_the_kind_in_their_names(snmpsim: Running) -> None:
    """ "Temperature", "Humidity1" and "Flooding" are read as what their names say; the
    "Ping GW" network check (1.00) and the empty ports ("-") give nothing."""
    profile, model, samples = await poll(snmpsim, "serverscheck")
    assert (profile, model) == ("serverscheck", "Temperature & Sensor Gateway")
    assert points(samples) == {
        ("env_sensor", (("sensor", "1"), ("sensor_name", "Temperature"))): {"temperature_c": 27.53},
        ("env_sensor", (("sensor", "6"), ("sensor_name", "Humidity1"))): {"humidity_pct": 39.63},
        ("env_contact", (("contact", "3"), ("contact_name", "Flooding"))): {"state": "DRY"},
    }


async def test_serverscheck_names_chosen_by_a_site_still_say_the_kind(snmpsim: Running) -> None:
    """SC-TS01 with rack-position names ("X105Y013 back Temp"); unused ports are empty
    OCTET STRINGs, not "-"."""
    profile, model, samples = await poll(snmpsim, "serverscheck_sc-ts01")
    assert (profile, model) == ("serverscheck", "Temperature & SensorGateway")
    assert elements(samples, "env_sensor", "sensor_name") == {
        "X105Y013 back Temp": {"temperature_c": 26.44},
        "X105Y013 down Temp": {"temperature_c": 21.88},
        "X105Y013 down Humid": {"humidity_pct": 48.75},
        "X108Y013 top Temp": {"temperature_c": 23.63},
        "X108Y013 top Humid": {"humidity_pct": 45.54},
    }
    assert [s for s in samples if s.measurement == "env_contact"] == []


async def test_controlbox_keeps_its_own_profile(snmpsim: Running) -> None:
    """The TH-332 (17095.2) is under ServersCheck's arc: the longer prefix wins."""
    profile, _, samples = await poll(snmpsim, "controlbox_controlbox")
    assert profile == "controlbox_th332"
    assert points(samples) == {
        ("env_sensor", ()): {"temperature_c": 22.9, "humidity_pct": 56.8, "dew_point_c": 14.3}
    }


@pytest.mark.parametrize(
    ("recording", "expected"),
    [
        # "70 F"; "77 F", "65 F" (esPointValueInt says 64: the text is the reading), "82 F"
        ("siteboss360_siteboss360", {"1": 21.111}),
        ("siteboss550", {"7": 25.0, "8": 18.333, "9": 27.778}),
        ("siteboss571_siteboss571", {"3": 24.0, "200": 35.0}),  # "24 C", "35 C"
        ("siteboss572", {"3": 30.0, "200": 37.0}),
    ],
)
async def test_siteboss_temperatures_in_the_unit_their_text_says(
    snmpsim: Running, recording: str, expected: dict[str, float]
) -> None:
    profile, _, samples = await poll(snmpsim, recording)
    assert profile == "asentria_siteboss"
    temperatures = {
        dict(tags)["sensor"]: fields["temperature_c"]
        for (measurement, tags), fields in points(samples).items()
        if measurement == "env_sensor" and "temperature_c" in fields
    }
    assert temperatures == expected


async def test_rittal_psm_modules_are_banks_named_by_their_variables(snmpsim: Running) -> None:
    """Two PSM8 modules on the PU Compact's gateway (device 2): current and alarm set point."""
    profile, _, samples = await poll(snmpsim, "rittal-cmc-iii-pu")
    assert profile == "rittal_cmc3"
    assert elements(samples, "pdu_bank", "bank") == {
        "PSM_P1_1": {"current_a": 1.4, "current_critical_a": 16.0},
        "PSM_P1_2": {"current_a": 1.5, "current_critical_a": 6.0},
    }
