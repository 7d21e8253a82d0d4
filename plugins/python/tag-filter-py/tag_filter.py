"""tag-filter-py: the Python twin of plugins/tag-filter. A filter plugin (world `filter` of
wit/quiver-plugin.wit) that keeps records carrying any of the configured tags, or all of them with
`mode=all`. Built into a WebAssembly component by componentize-py (build.sh); the batch bytes are
decoded by batch.py.

Config: `tags=a,b` (required, non-empty), `mode=any|all` (default `any`).

Binding conventions (componentize-py 0.25, see `componentize-py -d wit/quiver-plugin.wit -w filter
bindings OUT`): the world's exports are the methods of a class named `WitWorld` in this module,
subclassing the generated `wit_world.WitWorld`. `list<config-entry>` arrives as a list of
`ConfigEntry(key, value)`, `list<u8>` as `bytes`, `list<bool>` is returned as a list of bools. For
a `result<T, string>` export, returning gives `ok(T)` and raising
`componentize_py_types.Err(message)` gives `err(message)`; any other exception traps the instance,
so every expected failure below raises `Err`.

componentize-py imports this module at build time and snapshots the interpreter: module-level code
runs once, in the build, and must not call the host.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import host

from batch import decode_batch

# The validated configuration, set by `init`; None until an init succeeds. Module-level rather than
# on the `WitWorld` instance, so it does not depend on how the bindings create that instance.
_state = None


class _Config(object):
    __slots__ = ("mode", "tags", "wanted")

    def __init__(self, mode, tags):
        self.mode = mode
        self.tags = tags
        # Tags are compared as UTF-8 bytes; a set for one pass over each record's tags.
        self.wanted = frozenset(t.encode("utf-8") for t in tags)


def split_list(value):
    """Splits a list setting on `,`, trims the items and drops empty ones (like the Rust SDK)."""
    return [item for item in (part.strip() for part in value.split(",")) if item]


def configure(entries):
    """Validates the attachment's settings; returns a `_Config` or an error message (a str)."""
    # A key set twice keeps its last value, as a command line would.
    config = {}
    for entry in entries:
        config[entry.key] = entry.value
    if "tags" not in config:
        return "missing required config `tags` (attach with --config tags=...)"
    tags = split_list(config["tags"])
    if not tags:
        return "config `tags` is empty (attach with --config tags=...)"
    mode = config.get("mode", "any")
    if mode not in ("any", "all"):
        return "config `mode` has invalid value %s: expected one of any, all" % json.dumps(
            mode, ensure_ascii=False
        )
    return _Config(mode, tags)


def keep(config, record):
    """The verdict for one record: one walk over its tags, compared as bytes against the set."""
    if config.mode == "all":
        return config.wanted.issubset(record.tags)
    return not config.wanted.isdisjoint(record.tags)


class WitWorld(wit_world.WitWorld):
    def init(self, config):
        """WIT `init: func(config: list<config-entry>) -> result<_, string>`."""
        global _state
        # A failed init must not leave a previous configuration running.
        _state = None
        configured = configure(config)
        if isinstance(configured, str):
            raise Err(configured)
        _state = configured
        host.log(
            host.Level.INFO,
            "tag-filter-py: keeping records with %s of %s"
            % (_state.mode, json.dumps(_state.tags, ensure_ascii=False)),
        )

    def filter(self, batch):
        """WIT `filter: func(batch: list<u8>) -> result<list<bool>, string>`."""
        state = _state
        if state is None:
            raise Err("the plugin was called before a successful init")
        try:
            decoded = decode_batch(batch)
        except Exception as e:  # noqa: BLE001
            # decode_batch bounds-checks every read and should never raise; if it does, fail the
            # batch with a message instead of trapping the instance.
            raise Err("input batch rejected: %r" % (e,))
        if isinstance(decoded, str):
            raise Err(decoded)
        return [keep(state, record) for record in decoded.records]
