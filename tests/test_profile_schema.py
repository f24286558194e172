"""A profile's fields against the schema, wherever the profile language names one: refused in a
site's profile with file, line and what the schema expects; kept with a warning in a built-in."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from agent import registry
from agent.profile import load_fragment, load_profile
from agent.registry import load_registry
from telemetry.config import ConfigError
from telemetry.schema import schema

ENV_FIELDS = len(schema().measurements["env_sensor"].fields)  # the schema grows
HEAD = """\
name: site_env
vendor: site
kind: env_sensor
detect: {sys_object_id: ["1.3.6.1.4.1.99999.1"]}
"""


def refused(tmp_path: Path, body: str, name: str = "site_env.yaml") -> str:
    """The error a site profile directory holding `HEAD + body` is refused with."""
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEAD + body if not name.startswith("fragments/") else body)
    with pytest.raises(ConfigError) as raised:
        load_registry(tmp_path)
    return str(raised.value)


def line_of(tmp_path: Path, text: str, name: str = "site_env.yaml") -> str:
    lines = (tmp_path / name).read_text().splitlines()
    return f"{tmp_path / name}:{1 + next(i for i, t in enumerate(lines) if text in t)}"


def test_an_unknown_field_of_a_table_is_refused_with_names_near_it(tmp_path: Path) -> None:
    error = refused(
        tmp_path,
        """\
tables:
  - measurement: env_sensor
    entry: 1.3.6.1.4.1.99999.2.1
    fields:
      temperature_c: {column: 2}
      tempc: {column: 3}
""",
    )
    assert error == (
        f"{line_of(tmp_path, 'tempc:')}: tables[0].fields.tempc: field tempc: not in the schema's"
        " vocabulary for env_sensor; near: temperature_c;"
        f" docs/schema.md lists its {ENV_FIELDS} fields"
    )


def test_a_field_of_another_measurement_names_where_it_belongs(tmp_path: Path) -> None:
    error = refused(
        tmp_path,
        """\
scalars:
  - measurement: env_contact
    fields:
      temperature_c: {oid: 1.3.6.1.4.1.99999.3.0}
""",
    )
    assert f"{line_of(tmp_path, 'temperature_c:')}: scalars[0].fields.temperature_c:" in error
    assert "env_contact has no such field (it is one of " in error
    assert "env_sensor" in error.split("it is one of ")[1]


def test_a_field_of_another_type_says_which_field_type_writes_it(tmp_path: Path) -> None:
    error = refused(
        tmp_path,
        """\
scalars:
  - measurement: env_contact
    fields:
      state: {oid: 1.3.6.1.4.1.99999.3.0, type: counter, counter_bits: 32}
""",
    )
    assert error.endswith(
        "scalars[0].fields.state: field state: a counter writes int, but env_contact.state is"
        " string (enum) in the schema: needs type enum or string"
    )


def test_an_unknown_measurement_is_refused(tmp_path: Path) -> None:
    error = refused(
        tmp_path,
        """\
tables:
  - measurement: env_sensors
    entry: 1.3.6.1.4.1.99999.2.1
    fields: {temperature_c: {column: 2}}
""",
    )
    assert error.endswith(
        "tables[0].measurement: measurement 'env_sensors' is not in the schema;"
        " near: env_sensor, cooling_sensor"
    )
    assert error.startswith(line_of(tmp_path, "measurement: env_sensors"))


def test_pivot_keys_their_own_measurement_and_also_are_checked(tmp_path: Path) -> None:
    error = refused(
        tmp_path,
        """\
tables:
  - measurement: env_sensor
    entry: 1.3.6.1.4.1.99999.2.1
    index: [kind]
    pivot:
      index: kind
      value: {column: 2}
      keys:
        1: temperature_c
        2: humidity
        3: {field: state, measurement: env_contact}
        4: {field: temperature_c, also: {alarm_state: {column: 3, type: string}}}
""",
    )
    problems = error.splitlines()
    assert problems == [
        f"{line_of(tmp_path, '2: humidity')}: tables[0].pivot.keys.2.field: field humidity:"
        " not in the schema's vocabulary for env_sensor; near: humidity_pct;"
        f" docs/schema.md lists its {ENV_FIELDS} fields",
        f"{line_of(tmp_path, '3: {field: state')}: tables[0].pivot.keys.3.field: field state:"
        " a gauge writes float, but env_contact.state is string (enum) in the schema:"
        " needs type enum or string",
        f"{line_of(tmp_path, 'alarm_state:')}: tables[0].pivot.keys.4.also.alarm_state: field"
        " alarm_state: not in the schema's vocabulary for env_sensor;"
        f" docs/schema.md lists its {ENV_FIELDS} fields",
    ]


def test_every_for_each_copy_is_checked_and_a_problem_said_once(tmp_path: Path) -> None:
    error = refused(
        tmp_path,
        """\
scalars:
  - for_each: {probe: "1-4", field: "temperature_c,temperature_c,humidity_pct,dewpoint_c"}
    measurement: env_sensor
    tags: {probe: {value: "{probe}"}}
    fields:
      "{field}": {oid: "1.3.6.1.4.1.99999.4.{probe}.0"}
      level: {oid: "1.3.6.1.4.1.99999.5.{probe}.0"}
""",
    )
    problems = error.splitlines()
    assert len(problems) == 2, problems
    assert "scalars[0].fields.level: field level: not in the schema's vocabulary" in problems[0]
    assert "scalars[0].fields.dewpoint_c: field dewpoint_c:" in problems[1]  # the 4th copy
    assert "near: dew_point_c" in problems[1]


def test_a_site_fragment_off_the_schema_is_refused(tmp_path: Path) -> None:
    error = refused(
        tmp_path,
        """\
tables:
  - measurement: env_sensor
    entry: 1.3.6.1.4.1.99999.2.1
    fields: {temp: {column: 3}}
""",
        name="fragments/probes.yaml",
    )
    assert "fragments/probes.yaml:4: tables[0].fields.temp: field temp: not in the" in error
    with pytest.raises(ConfigError, match="field temp: not in the schema's vocabulary"):
        load_fragment(tmp_path / "fragments" / "probes.yaml")


def test_a_single_profile_file_is_refused_as_well(tmp_path: Path) -> None:
    """`rackwatch probe --profile FILE` reads one file with load_profile."""
    path = tmp_path / "site_env.yaml"
    path.write_text(
        HEAD + "scalars:\n  - measurement: env_sensor\n"
        "    fields: {temp: {oid: 1.3.6.1.4.1.99999.3.0}}\n"
    )
    with pytest.raises(ConfigError, match=r"site_env.yaml:7: scalars\[0\]\.fields\.temp: field"):
        load_profile(path)


def test_a_builtin_off_the_schema_is_kept_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A built-in is shipped code that tests/test_schema.py checks; refusing the whole built-in
    directory for one field would stop every device the agent polls."""
    (tmp_path / "site_env.yaml").write_text(
        HEAD + "scalars:\n  - measurement: env_sensor\n"
        "    fields: {temp: {oid: 1.3.6.1.4.1.99999.3.0}}\n"
    )
    with caplog.at_level(logging.WARNING, logger="agent.registry"):
        found = registry._read_dir(tmp_path, builtin=True)
    assert "site_env" in found.profiles
    assert "site_env.yaml:7: scalars[0].fields.temp: field temp: not in the" in caplog.text


def test_every_builtin_profile_and_fragment_is_on_the_schema() -> None:
    found = registry._read_dir(registry.BUILTIN_DIR)  # as a site's: refused if one is off it
    assert found.profiles
