"""Quiver client for Python: asyncio API over QUIC (aioquic), TLS 1.3, ALPN `quiver/1`.

    async with await quiver.Client.connect("127.0.0.1:7447", ca="quiver-data/tls/ca.pem") as c:
        await c.admin.create_topic("orders", 3)
        producer = quiver.Producer(c)
        meta = await (await producer.send("orders", b"hello", key=b"k"))
"""

from .admin import Admin, PartitionDescription, TopicDescription, TopicSummary
from .batch import Record, partition_for_key
from .client import Client
from .consumer import EARLIEST, LATEST, ConsumedRecord, Consumer, Offset, Timestamp
from .group import GroupConsumer
from .queue import QueueConsumer, QueuedRecord, Settled
from .rpc import Requester, Responder, reply_to
from .producer import Delivery, Producer, RecordMetadata
from .errors import (
    BatchError,
    BrokerError,
    ConnectError,
    ConnectionClosed,
    ErrorCode,
    NoReply,
    ProtocolError,
    QuiverError,
)

__all__ = [
    "Admin", "BatchError", "ConsumedRecord", "Consumer", "Delivery", "EARLIEST", "GroupConsumer", "LATEST", "Offset",
    "Producer", "QueueConsumer", "QueuedRecord", "RecordMetadata", "Requester", "Responder", "Settled",
    "reply_to", "Timestamp", "BrokerError", "Client", "ConnectError", "ConnectionClosed", "ErrorCode",
    "NoReply", "PartitionDescription", "ProtocolError", "QuiverError", "Record", "TopicDescription",
    "TopicSummary", "partition_for_key",
]
__version__ = "0.1.0"
