"""What replicas of one deployment tell each other through the store: who is live, and
which provider circuits are open."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypedDict


class Replica(TypedDict):
    """One live daemon of a deployment, as /api/status lists it."""

    id: str
    started: float  # Unix time
    inflight: int  # tool calls running on it
    tasks: int  # tasks working on it


@dataclass(frozen=True)
class OpenCircuit:
    """A provider circuit that is open: for how many more seconds, and why."""

    seconds: float
    reason: str
    failures: int


@dataclass
class Deployment:
    """The answer to a replica's announcement: every live replica, the oldest first, and the
    circuits open anywhere in the deployment (by provider)."""

    replicas: list[Replica]
    circuits: dict[str, OpenCircuit] = field(default_factory=dict)
