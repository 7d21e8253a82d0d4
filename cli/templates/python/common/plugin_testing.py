"""Test helpers for the plugin's unit tests (not part of the component: the plugin never imports
it). Importing it installs stand-ins for componentize-py's generated bindings (`wit_world`,
`componentize_py_types`), which exist only inside the build, so the plugin module imports natively;
the `host.log` stand-in records the log lines in `LOG`.
"""

import enum
import sys
import types
from dataclasses import dataclass

LOG = []  # (level, message) of every host.log call


def install_binding_stand_ins():
    """Stand-ins for the generated modules, with the same names and shapes (see the real ones with
    `componentize-py -d wit/quiver-plugin.wit -w {{world}} bindings OUT`)."""

    @dataclass(frozen=True)
    class Err(Exception):
        value: object

    @dataclass
    class ConfigEntry:
        key: str
        value: str

    @dataclass
    class Routes:
        topics: list
        counts: list
        targets: list

    class Level(enum.Enum):
        TRACE, DEBUG, INFO, WARN, ERROR = range(5)

    def module(name, **attributes):
        m = types.ModuleType(name)
        m.__dict__.update(attributes)
        sys.modules.setdefault(name, m)
        return m

    module("componentize_py_types", Err=Err)
    host = module(
        "wit_world.imports.host",
        Level=Level,
        log=lambda level, message: LOG.append((level.name.lower(), message)),
        now_ms=lambda: 1700000000000,
    )
    wit_types = module("wit_world.imports.types", ConfigEntry=ConfigEntry, Routes=Routes)
    imports = module("wit_world.imports", host=host, types=wit_types)
    module("wit_world", WitWorld=object, imports=imports)


install_binding_stand_ins()

from componentize_py_types import Err  # noqa: E402
from wit_world.imports.types import ConfigEntry  # noqa: E402


def config(settings=None):
    """`config({"tag": "gold"})` -> the list<config-entry> of `--config tag=gold`."""
    return [ConfigEntry(key, value) for key, value in (settings or {}).items()]


def refusal(call, *args):
    """The message of the `err` that `call` returns."""
    try:
        call(*args)
    except Err as e:
        return e.value
    raise AssertionError("expected an Err")
