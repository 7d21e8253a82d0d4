"""{{name}}: a Quiver filter plugin (world `filter` of wit/quiver-plugin.wit). Keeps the records
that carry one tag (config `tag`, default `vip`) and drops the rest. Change `keep` to filter on
anything else a record has: its key, value, tags, headers or timestamp.

Built by `quiver plugin build` (componentize-py): this module is imported once, at build time, and
the interpreter is snapshotted. So import everything at module level, and do not call `host` there.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import host

from quiver_batch import BatchError, decode_batch

# The settings of the attachment (`quiver topic attach … --config tag=gold`), set by `init`; None
# until an init succeeds.
_settings = None


def configure(entries):
    """Checks the config and returns the settings as a dict. Unknown keys are refused, so a typo
    fails the attach instead of being ignored."""
    settings = {"tag": "vip"}  # every accepted key, with its default
    for entry in entries:
        if entry.key not in settings:
            raise Err("unknown config `%s` ({{name}} takes: tag)" % entry.key)
        settings[entry.key] = entry.value
    return settings


def keep(settings, record):
    """The verdict for one record (a quiver_batch.Record): True keeps it."""
    return record.has_tag(settings["tag"])


class WitWorld(wit_world.WitWorld):
    """The world's exports. Returning gives `ok`; raising `Err(message)` gives `err`, and any
    other exception traps the instance, so expected failures raise `Err`."""

    def init(self, config):
        """WIT `init: func(config: list<config-entry>) -> result<_, string>`."""
        global _settings
        _settings = None  # a refused init must not leave the previous settings running
        _settings = configure(config)
        tag = json.dumps(_settings["tag"], ensure_ascii=False)
        host.log(host.Level.INFO, "{{name}}: keeping records tagged %s" % tag)

    def filter(self, batch):
        """WIT `filter: func(batch: list<u8>) -> result<list<bool>, string>`: one verdict per
        record, in batch order."""
        if _settings is None:
            raise Err("{{name}}: called before a successful init")
        try:
            records = decode_batch(batch).records
        except BatchError as e:
            raise Err(str(e))
        return [keep(_settings, record) for record in records]
