"""Model-based test: a Hypothesis state machine drives a real server process through its HTTP
API, and after every step each user's view is compared with a plain in-memory model.

Steps: sign up, log in, revoke a token, delete an account, send (with and without an
Idempotency-Key, repeats and reuses included), read the inbox (filters, pages, cursors,
unread), mark read. Checked after every step, for every user with a live token: their
conversations (peer, latest message, unread count, read marks, unread total) and that dead
tokens are refused. To cover a new rule (edits, deletes, blocks), add a field to `Model`, a
rule that calls the route and updates the model, and compare in `check_views`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from testinfra.server import ServerProcess
from tests.proof import knobs
from tests.proof.conftest import bearer, login, new_name, signup

TEXTS = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1).filter(
    lambda t: not t.isspace()
)


@dataclass
class Member:
    id: int
    name: str
    alive: bool = True
    tokens: list[str] = field(default_factory=list)
    dead_tokens: list[str] = field(default_factory=list)


@dataclass
class Message:
    id: int
    sender: int
    recipient: int
    text: str
    fetched: bool = False


@dataclass
class Model:
    """What every user must see."""

    users: list[Member] = field(default_factory=list)
    messages: dict[int, Message] = field(default_factory=dict)
    keys: dict[tuple[int, str], tuple[int, str, int]] = field(default_factory=dict)
    read_marks: dict[tuple[int, int], int] = field(default_factory=dict)

    def live(self) -> list[Member]:
        return [u for u in self.users if u.alive and u.tokens]

    def inbox(self, user: int, peer: int | None = None, unread: bool = False) -> list[Message]:
        """What ``GET /chats/`` lists: the messages sent to the user, or with ``peer`` their
        conversation in both directions; ``unread``: only those sent to the user and not yet
        fetched by them."""

        def listed(m: Message) -> bool:
            if peer is None:
                return m.recipient == user
            return {m.sender, m.recipient} == {user, peer}

        def unfetched(m: Message) -> bool:
            return m.recipient == user and not m.fetched

        return sorted(
            (m for m in self.messages.values() if listed(m) and (not unread or unfetched(m))),
            key=lambda m: -m.id,
        )

    def conversations(self, user: int) -> dict[int, dict[str, int]]:
        """peer -> what the conversation row shows."""
        peers: dict[int, list[Message]] = {}
        for m in self.messages.values():
            if user in (m.sender, m.recipient) and m.sender != m.recipient:
                peers.setdefault(m.recipient if m.sender == user else m.sender, []).append(m)
        out = {}
        for peer, messages in peers.items():
            mark = self.read_marks.get((user, peer), 0)
            out[peer] = {
                "last_message": max(m.id for m in messages),
                "unread_count": sum(1 for m in messages if m.sender == peer and m.id > mark),
                "last_read_id": mark,
                "peer_last_read_id": self.read_marks.get((peer, user), 0),
            }
        return out


class ChatMachine(RuleBasedStateMachine):
    client: httpx.Client

    def __init__(self) -> None:
        super().__init__()
        self.model = Model()

    # ------------------------------------------------------------ accounts

    @precondition(lambda self: sum(u.alive for u in self.model.users) < 4)
    @rule()
    def sign_up(self) -> None:
        name = new_name("m")
        user = Member(signup(self.client, name), name)
        user.tokens.append(login(self.client, name))
        self.model.users.append(user)

    @precondition(lambda self: any(u.alive for u in self.model.users))
    @rule(data=st.data())
    def log_in(self, data: st.DataObject) -> None:
        user = data.draw(st.sampled_from([u for u in self.model.users if u.alive]))
        user.tokens.append(login(self.client, user.name))

    @precondition(lambda self: self.model.live())
    @rule(data=st.data())
    def revoke(self, data: st.DataObject) -> None:
        user = data.draw(st.sampled_from(self.model.live()))
        token = data.draw(st.sampled_from(user.tokens))
        r = self.client.delete("/api/v1/auth/token/", headers=bearer(token))
        assert r.status_code == 204, r.text
        user.tokens.remove(token)
        user.dead_tokens.append(token)

    @precondition(lambda self: self.model.live())
    @rule(data=st.data())
    def delete_account(self, data: st.DataObject) -> None:
        user = data.draw(st.sampled_from(self.model.live()))
        r = self.client.delete("/api/v1/users/", headers=bearer(user.tokens[0]))
        assert r.status_code == 204, r.text
        user.alive = False
        user.dead_tokens += user.tokens
        user.tokens.clear()
        gone = [i for i, m in self.model.messages.items() if m.recipient == user.id]
        for message_id in gone:
            del self.model.messages[message_id]
        self.model.read_marks = {k: v for k, v in self.model.read_marks.items() if k[0] != user.id}

    # ------------------------------------------------------------ sending

    @precondition(lambda self: self.model.live() and len(self.model.users) >= 2)
    @rule(data=st.data(), text=TEXTS, key=st.none() | st.sampled_from(["k1", "k2", "k3"]))
    def send(self, data: st.DataObject, text: str, key: str | None) -> None:
        sender = data.draw(st.sampled_from(self.model.live()))
        to = data.draw(st.sampled_from([u for u in self.model.users if u is not sender]))
        headers = {**bearer(sender.tokens[-1]), **({"Idempotency-Key": key} if key else {})}
        r = self.client.post(
            "/api/v1/chats/", json={"user_id": to.id, "message": text}, headers=headers
        )
        earlier = self.model.keys.get((sender.id, key)) if key else None
        if earlier is not None and (earlier[1], earlier[2]) != (text, to.id):
            assert r.status_code == 422, r.text
        elif earlier is not None:
            assert r.status_code in (200, 201), r.text
            assert r.json()["id"] == earlier[0]
        elif not to.alive:
            assert r.status_code == 404, r.text
        else:
            assert r.status_code == 201, r.text
            body = r.json()
            assert (body["sent_by"], body["received_by"], body["message"]) == (
                sender.id,
                to.id,
                text,
            )
            assert body["id"] > max(self.model.messages, default=0)
            self.model.messages[body["id"]] = Message(body["id"], sender.id, to.id, text)
            if key:
                self.model.keys[(sender.id, key)] = (body["id"], text, to.id)

    # ------------------------------------------------------------ reading

    @precondition(lambda self: self.model.live())
    @rule(data=st.data(), unread=st.booleans(), by_peer=st.booleans(), page_size=st.integers(1, 4))
    def read_inbox(self, data: st.DataObject, unread: bool, by_peer: bool, page_size: int) -> None:
        user = data.draw(st.sampled_from(self.model.live()))
        peer = data.draw(st.sampled_from(self.model.users)) if by_peer else None
        expected = self.model.inbox(user.id, peer.id if peer else None, unread)
        params: dict[str, Any] = {"page_size": page_size, "unread": str(unread).lower()}
        if peer is not None:
            params["with"] = peer.id
        page = data.draw(st.integers(1, max(1, -(-len(expected) // page_size))))
        got = self.read(user, {**params, "page": page})
        want = expected[(page - 1) * page_size : page * page_size]
        assert [m["id"] for m in got["messages"]] == [m.id for m in want]
        assert got["meta"]["count"] == len(expected)
        self.saw(user, got["messages"])

    @precondition(lambda self: self.model.live())
    @rule(data=st.data(), after=st.booleans())
    def read_cursor(self, data: st.DataObject, after: bool) -> None:
        user = data.draw(st.sampled_from(self.model.live()))
        inbox = self.model.inbox(user.id)
        cursor = data.draw(st.sampled_from([0, *(m.id for m in inbox)]))
        if after:
            want = sorted(m.id for m in inbox if m.id > cursor)[:100]
            got = self.read(user, {"after_id": cursor, "page_size": 100})
        else:
            want = [m.id for m in inbox if cursor == 0 or m.id < cursor][:100]
            got = self.read(user, {"before_id": cursor or 2**62, "page_size": 100})
        assert [m["id"] for m in got["messages"]] == want
        self.saw(user, got["messages"])

    def read(self, user: Member, params: dict[str, Any]) -> dict[str, Any]:
        r = self.client.get("/api/v1/chats/", params=params, headers=bearer(user.tokens[0]))
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        for m in body["messages"]:
            model = self.model.messages[m["id"]]
            assert (m["sent_by"], m["received_by"], m["message"]) == (
                model.sender,
                model.recipient,
                model.text,
            )
        return body

    def saw(self, reader: Member, messages: list[dict[str, Any]]) -> None:
        """A read marks what it listed as fetched, of the messages sent to the reader."""
        for m in messages:
            if m["received_by"] == reader.id:
                self.model.messages[m["id"]].fetched = True

    @precondition(lambda self: self.model.live())
    @rule(data=st.data())
    def mark_read(self, data: st.DataObject) -> None:
        user = data.draw(st.sampled_from(self.model.live()))
        peers = self.model.conversations(user.id)
        peer = data.draw(st.sampled_from([*peers, user.id]))
        # Ids are the server's and grow across examples, so the draw picks among candidates
        # whose number follows the model alone (a range of ids would make Hypothesis draw
        # differently for the same choices): none, recent ids, and past the latest.
        top = max(self.model.messages, default=0)
        up_to = data.draw(st.sampled_from([0, *sorted(self.model.messages)[-3:], top + 1, top + 2]))
        r = self.client.post(
            f"/api/v1/conversations/{peer}/read",
            json={"up_to_id": up_to},
            headers=bearer(user.tokens[0]),
        )
        if peer not in peers:
            assert r.status_code == 404, r.text
            return
        assert r.status_code == 200, r.text
        mark = self.model.read_marks.get((user.id, peer), 0)
        moved = max(mark, min(up_to, peers[peer]["last_message"]))
        self.model.read_marks[(user.id, peer)] = moved
        assert r.json()["last_read_id"] == moved

    # ------------------------------------------------------------ what everyone sees

    @invariant()
    def check_views(self) -> None:
        for user in self.model.live():
            r = self.client.get(
                "/api/v1/conversations/", params={"page_size": 100}, headers=bearer(user.tokens[-1])
            )
            assert r.status_code == 200, r.text
            body = r.json()
            got = {
                c["user_id"]: {
                    "last_message": c["last_message"]["id"],
                    "unread_count": c["unread_count"],
                    "last_read_id": c["last_read_id"],
                    "peer_last_read_id": c["peer_last_read_id"],
                }
                for c in body["conversations"]
            }
            want = self.model.conversations(user.id)
            assert got == want
            assert body["unread_total"] == sum(c["unread_count"] for c in want.values())
            order = [c["last_message"]["id"] for c in body["conversations"]]
            assert order == sorted(order, reverse=True)

    @invariant()
    def dead_tokens_refused(self) -> None:
        for user in self.model.users:
            for token in user.dead_tokens[-2:]:
                r = self.client.get("/api/v1/users/", headers=bearer(token))
                assert r.status_code == 401, r.text


def test_every_user_sees_what_the_model_says(proof_server: ServerProcess) -> None:
    with httpx.Client(base_url=proof_server.base_url, timeout=30) as client:
        machine = type("Machine", (ChatMachine,), {"client": client})
        run_state_machine_as_test(
            machine,
            settings=settings(
                max_examples=knobs.MODEL_EXAMPLES,
                stateful_step_count=knobs.MODEL_STEPS,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                database=None,
                # Each step is an HTTP request: shrinking could take many minutes; the
                # failing run's steps are printed as they are.
                phases=[Phase.explicit, Phase.generate],
            ),
        )


pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")
