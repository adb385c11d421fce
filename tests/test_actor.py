"""The actor base: tell/ask over one bounded mailbox, typed commands dispatched with match,
lifecycle hooks, supervision, and a clean stop."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from flowstage.actors.actor import Actor, ActorStopped, Directive
from flowstage.simulation.errors import Conflict, MailboxFull


class Add(msgspec.Struct, frozen=True, tag="add"):
    amount: int


class Get(msgspec.Struct, frozen=True, tag="get"):
    pass


class Refuse(msgspec.Struct, frozen=True, tag="refuse"):
    pass


class Crash(msgspec.Struct, frozen=True, tag="crash"):
    pass


Command = Add | Get | Refuse | Crash


class Counter(Actor[Command]):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.total = 0
        self.hooks: list[str] = []

    def receive(self, message: Command) -> Any:
        match message:
            case Add(amount=amount):
                self.total += amount
                return self.total
            case Get():
                return self.total
            case Refuse():
                raise Conflict("not now")
            case Crash():
                raise RuntimeError("boom")

    def on_start(self) -> None:
        self.hooks.append("start")

    def on_stop(self) -> None:
        self.hooks.append("stop")

    def on_failure(self, error: BaseException) -> None:
        self.hooks.append(f"failure:{error}")


class Parent:
    def __init__(self, directive: Directive) -> None:
        self.directive = directive
        self.failures: list[tuple[Actor[Any], BaseException]] = []

    def child_failed(self, child: Actor[Any], error: BaseException) -> Directive:
        self.failures.append((child, error))
        return self.directive


async def test_tell_and_ask_are_handled_in_order() -> None:
    actor = Counter(mailbox_size=8)
    actor.tell(Add(2))
    actor.tell(Add(3))
    assert await actor.ask(Get()) == 5
    assert actor.hooks == ["start"]


async def test_a_domain_error_is_the_reply_and_the_actor_carries_on() -> None:
    actor = Counter(mailbox_size=8)
    with pytest.raises(Conflict, match="not now"):
        await actor.ask(Refuse())
    assert await actor.ask(Add(1)) == 1


async def test_a_crash_is_the_supervisors_decision_resume() -> None:
    parent = Parent("resume")
    actor = Counter(mailbox_size=8, supervisor=parent)
    with pytest.raises(RuntimeError, match="boom"):
        await actor.ask(Crash())
    assert [str(e) for _, e in parent.failures] == ["boom"]
    assert actor.hooks == ["start", "failure:boom"]
    assert await actor.ask(Add(4)) == 4  # resumed with its state


async def test_a_crash_is_the_supervisors_decision_stop() -> None:
    parent = Parent("stop")
    actor = Counter(mailbox_size=8, supervisor=parent)
    actor.tell(Crash())
    pending = actor.ask(Add(1))  # queued behind the crash
    with pytest.raises(ActorStopped):
        await pending
    assert not actor.alive
    assert actor.hooks == ["start", "failure:boom", "stop"]


async def test_a_full_mailbox_refuses_instead_of_growing() -> None:
    actor = Counter(mailbox_size=3)
    for _ in range(3):
        actor.tell(Add(1))
    with pytest.raises(MailboxFull):
        actor.tell(Add(1))
    with pytest.raises(MailboxFull):
        actor.ask(Get())
    await asyncio.sleep(0)
    assert actor.total == 3


async def test_stop_drains_the_mailbox_and_fails_pending_asks_clearly() -> None:
    actor = Counter(mailbox_size=8)
    first = actor.ask(Add(1))
    second = actor.ask(Get())
    actor.stop()
    for future in (first, second):
        with pytest.raises(ActorStopped, match="stopped before handling"):
            await future
    assert isinstance(ActorStopped("x"), Conflict)
    assert actor.hooks == ["stop"]  # never started: nothing was handled


async def test_ask_after_stop_fails_at_once() -> None:
    actor = Counter(mailbox_size=8)
    await actor.ask(Add(1))
    actor.stop()
    actor.stop()  # idempotent
    with pytest.raises(ActorStopped, match="is stopped"):
        actor.ask(Get())
    with pytest.raises(ActorStopped):
        actor.tell(Add(1))
    assert actor.hooks == ["start", "stop"]


async def test_a_cancelled_asker_does_not_break_the_actor() -> None:
    actor = Counter(mailbox_size=8)
    abandoned = actor.ask(Add(1))
    abandoned.cancel()
    assert await actor.ask(Get()) == 1
