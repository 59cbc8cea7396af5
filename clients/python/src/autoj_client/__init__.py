"""Python client for autoj: Auto-J LLM judges over gRPC.

``Client`` wraps the generated stubs (``autoj_client.messages`` is the generated message
module, for enums such as ``messages.WINNER_RESPONSE_1``); ``AutojError`` carries the gRPC
status code of a failed call; ``Options`` holds the judging options.
"""

from ._proto import autoj_pb2 as messages
from .client import AutojError, Client, Event, Judgment, Options, compare_item, critique_item

__all__ = [
    "AutojError",
    "Client",
    "Event",
    "Judgment",
    "Options",
    "compare_item",
    "critique_item",
    "messages",
]
