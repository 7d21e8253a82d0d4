"""{{name}}: a Quiver router plugin (world `router` of wit/quiver-plugin.wit). Records that carry a
tag (config `tag`, default `vip`) go to the topic `to` (required); the others go to `rest`, or are
dropped when `rest` is not set. Change `destinations` to pick topics from anything a record has; a
record may go to several topics or to none.

Built by `quiver plugin build` (componentize-py): this module is imported once, at build time, and
the interpreter is snapshotted. So import everything at module level, and do not call `host` there.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import host
from wit_world.imports.types import Routes

from quiver_batch import BatchError, decode_batch

# The settings of the attachment (`quiver topic attach … --config to=vip-orders`), set by `init`;
# None until an init succeeds.
_settings = None

TOPIC_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")


def configure(entries):
    """Checks the config and returns the settings as a dict. Unknown keys are refused, and topic
    names are checked here, so a typo fails the attach instead of every batch."""
    settings = {"to": None, "tag": "vip", "rest": None}  # every accepted key, with its default
    for entry in entries:
        if entry.key not in settings:
            raise Err("unknown config `%s` ({{name}} takes: to, tag, rest)" % entry.key)
        settings[entry.key] = entry.value
    if settings["to"] is None:
        raise Err("missing required config `to` (attach with --config to=...)")
    for key in ("to", "rest"):
        name = settings[key]
        if name is not None and not (0 < len(name) <= 249 and TOPIC_CHARS.issuperset(name)):
            raise Err(
                "config `%s`: %s is not a topic name (1-249 characters of A-Za-z0-9._-)"
                % (key, json.dumps(name, ensure_ascii=False))
            )
    return settings


def destinations(settings, record):
    """The topics one record (a quiver_batch.Record) goes to: a list, empty to drop it."""
    if record.has_tag(settings["tag"]):
        return [settings["to"]]
    if settings["rest"] is not None:
        return [settings["rest"]]
    return []


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
            "{{name}}: records tagged %s -> %s, others -> %s"
            % (
                json.dumps(_settings["tag"], ensure_ascii=False),
                _settings["to"],
                _settings["rest"] or "dropped",
            ),
        )

    def route(self, batch):
        """WIT `route: func(batch: list<u8>) -> result<routes, string>`.

        `Routes` is flat: `topics` names each destination once, `counts[i]` is how many topics
        record i goes to, and their indexes into `topics` follow in `targets`, record by record.
        """
        if _settings is None:
            raise Err("{{name}}: called before a successful init")
        try:
            records = decode_batch(batch).records
        except BatchError as e:
            raise Err(str(e))
        topics, counts, targets = [], [], []
        index_of = {}  # topic name -> its index in `topics`
        for record in records:
            names = list(dict.fromkeys(destinations(_settings, record)))  # each topic once
            counts.append(len(names))
            for name in names:
                if name not in index_of:
                    index_of[name] = len(topics)
                    topics.append(name)
                targets.append(index_of[name])
        return Routes(topics, counts, targets)
