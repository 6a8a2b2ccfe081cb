"""An in-process Grid: the ServerApp's Grid calls go straight to ClientApp objects.

For many clients on one machine without Ray or processes (tests, benchmarks, quick runs). Each
node has its own `Context` (its own `state` and `node_config`). A message is handled when pushed;
`drop(node_id, message)` returning True makes that node silent for that message, as a dead node
is. Each node receives its own deep copy of a message (mods such as `secaggplus_mod` edit the
content they receive). Replies of a ClientApp that raises become Flower error replies, as on a SuperNode.
"""

from __future__ import annotations

import copy
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from .records import payload_nbytes

CLIENT_APP_RAISED = 0  # flwr's ErrorCode.CLIENT_APP_RAISED_EXCEPTION


class LocalGrid(Grid):
    def __init__(
        self,
        client_app: ClientApp,
        node_configs: Mapping[int, Mapping[str, Any]],
        run_config: Mapping[str, Any] | None = None,
        drop: Callable[[int, Message], bool] | None = None,
        record_replies: bool = False,
    ) -> None:
        self.client_app = client_app
        # Messages read the run and sender from the process's task identity (set by the
        # SuperLink's runtime in a deployment); in process we are the ServerApp of run 1.
        for name, value in (("_run_id", 1), ("_node_id", 1), ("_task_id", 1)):
            if getattr(TaskIdentity, name) is None:
                setattr(TaskIdentity, name, value)
        self.contexts = {
            node: Context(
                run_id=1,
                node_id=node,
                node_config=dict(config),
                state=RecordDict(),
                run_config=dict(run_config or {}),
            )
            for node, config in node_configs.items()
        }
        self.drop = drop
        self._replies: dict[str, Message] = {}
        self._run: Any = Run.create_empty(1)
        self.uplink_bytes: dict[int, int] = defaultdict(int)
        self.downlink_bytes: dict[int, int] = defaultdict(int)
        # seconds each node's ClientApp spent, one list per push (one protocol round): clients
        # run one after another here, so `parallel_seconds` estimates a real round's wall time
        self.client_seconds: list[list[float]] = []
        self.record_replies = record_replies
        self.replies: list[tuple[int, Message]] = []  # every reply, with record_replies

    def set_run(self, run: Any) -> None:
        self._run = run

    @property
    def run(self) -> Any:
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        spent: list[float] = []
        for message in messages:
            message_id = uuid.uuid4().hex
            message.metadata.__dict__["_message_id"] = message_id
            ids.append(message_id)
            node = message.metadata.dst_node_id
            if node not in self.contexts or (self.drop and self.drop(node, message)):
                continue
            self.downlink_bytes[node] += payload_nbytes(message.content)
            delivered = copy.deepcopy(message)  # each node gets its own copy, as over a network
            started = time.perf_counter()
            try:
                reply = self.client_app(delivered, self.contexts[node])
            except Exception as exc:  # what a SuperNode does with a raising ClientApp
                reply = Message(
                    Error(code=CLIENT_APP_RAISED, reason=f"{type(exc).__name__}: {exc}"),
                    reply_to=delivered,
                )
            else:
                self.uplink_bytes[node] += payload_nbytes(reply.content)
            spent.append(time.perf_counter() - started)
            if self.record_replies:
                self.replies.append((node, copy.deepcopy(reply)))
            reply.metadata.__dict__["_src_node_id"] = node
            self._replies[message_id] = reply
        self.client_seconds.append(spent)
        return ids

    def parallel_seconds(self, serial_seconds: float) -> float:
        """A run's wall time had the clients of each round worked in parallel: the serial time
        minus all client time plus the slowest client of each round."""
        rounds = [r for r in self.client_seconds if r]
        return serial_seconds - sum(map(sum, rounds)) + sum(map(max, rounds))

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))
