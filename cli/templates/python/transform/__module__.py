"""{{name}}: a Quiver transform plugin (world `transform` of wit/quiver-plugin.wit). Upper-cases
each record's value when it is UTF-8 text (other values pass unchanged) and adds the header
`transformed-by` (config `by`, default `{{name}}`); key, tags, other headers and timestamp are
kept. Change `rewrite` to change records any other way, or to drop some.

Built by `quiver plugin build` (componentize-py): this module is imported once, at build time, and
the interpreter is snapshotted. So import everything at module level, and do not call `host` there.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import host

from quiver_batch import BatchError, NewRecord, decode_batch, encode_batch

# The settings of the attachment (`quiver topic attach … --config by=me`), set by `init`; None
# until an init succeeds.
_settings = None


def configure(entries):
    """Checks the config and returns the settings as a dict. Unknown keys are refused, so a typo
    fails the attach instead of being ignored."""
    settings = {"by": "{{name}}"}  # every accepted key, with its default
    for entry in entries:
        if entry.key not in settings:
            raise Err("unknown config `%s` ({{name}} takes: by)" % entry.key)
        settings[entry.key] = entry.value
    return settings


def rewrite(settings, record):
    """The output record for one input record (a quiver_batch.Record), or None to drop it."""
    value = record.value
    try:
        value = value.decode("utf-8").upper().encode("utf-8")
    except UnicodeDecodeError:
        pass  # not text: keep the bytes as they are
    return NewRecord(
        value,
        key=record.key,
        tags=record.tags,
        headers=record.headers + [(b"transformed-by", settings["by"])],
        timestamp=record.timestamp,
    )


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
            "{{name}}: upper-casing values, header transformed-by: %s"
            % json.dumps(_settings["by"], ensure_ascii=False),
        )

    def transform(self, batch):
        """WIT `transform: func(batch: list<u8>) -> result<list<u8>, string>`: the encoded
        replacement batch (offsets renumbered from 0), or b"" to drop every record."""
        if _settings is None:
            raise Err("{{name}}: called before a successful init")
        try:
            records = decode_batch(batch).records
            output = [rewrite(_settings, record) for record in records]
            return encode_batch(r for r in output if r is not None)
        except BatchError as e:
            raise Err(str(e))
