"""{{name}}: a Quiver scheduler plugin (world `scheduler` of wit/quiver-plugin.wit). Delays each
record by `delay-ms` (default 1000) before the broker appends it, except records that carry the tag
`urgent-tag` (default `urgent`), which are delivered at once. Change `delay` to compute the delay
from anything a record has.

Built by `quiver plugin build` (componentize-py): this module is imported once, at build time, and
the interpreter is snapshotted. So import everything at module level, and do not call `host` there.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import host

from quiver_batch import BatchError, decode_batch

# The settings of the attachment (`quiver topic attach … --config delay-ms=60000`), set by `init`;
# None until an init succeeds.
_settings = None


def configure(entries):
    """Checks the config and returns the settings as a dict. Unknown keys and a `delay-ms` that is
    not a whole number are refused, so a typo fails the attach instead of being ignored."""
    settings = {"delay-ms": "1000", "urgent-tag": "urgent"}  # every accepted key, with its default
    for entry in entries:
        if entry.key not in settings:
            raise Err("unknown config `%s` ({{name}} takes: delay-ms, urgent-tag)" % entry.key)
        settings[entry.key] = entry.value
    delay = settings["delay-ms"]
    # ASCII digits only (str.isdigit alone also accepts "²"), within the WIT's u64 (20 digits).
    if not (delay.isascii() and delay.isdigit() and len(delay) <= 20 and int(delay) < 1 << 64):
        raise Err(
            "config `delay-ms`: %s is not a whole number of milliseconds"
            % json.dumps(delay, ensure_ascii=False)
        )
    settings["delay-ms"] = int(delay)
    return settings


def delay(settings, record):
    """The delay of one record (a quiver_batch.Record) in milliseconds; 0 delivers it now."""
    if record.has_tag(settings["urgent-tag"]):
        return 0
    return settings["delay-ms"]


class WitWorld(wit_world.WitWorld):
    """The world's exports. Returning gives `ok`; raising `Err(message)` gives `err`, and any
    other exception traps the instance, so expected failures raise `Err`."""

    def init(self, config):
        """WIT `init: func(config: list<config-entry>) -> result<_, string>`."""
        global _settings
        _settings = None  # a refused init must not leave the previous settings running
        _settings = configure(config)
        host.log(
            host.Level.INFO,
            "{{name}}: delaying records by %d ms, except those tagged %s"
            % (_settings["delay-ms"], json.dumps(_settings["urgent-tag"], ensure_ascii=False)),
        )

    def schedule(self, batch):
        """WIT `schedule: func(batch: list<u8>) -> result<list<u64>, string>`: one delay in
        milliseconds per record, in batch order (the broker caps them at a year)."""
        if _settings is None:
            raise Err("{{name}}: called before a successful init")
        try:
            records = decode_batch(batch).records
        except BatchError as e:
            raise Err(str(e))
        return [delay(_settings, record) for record in records]
