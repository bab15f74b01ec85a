"""The message lifecycle in the browser: reply, edit and delete on both sides (live and
after a network drop), typing, presence, blocking and searching."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import expect

from tests.web.conftest import ApiClient, Person
from tests.web.test_chat import pair


def act(person: Person, text: str, action: str) -> None:
    """Click one of a message's actions (shown on hover or focus)."""
    message = person.message(text)
    message.hover()
    message.get_by_role("button", name=action, exact=True).click()


def test_reply_edit_and_delete_show_on_both_sides(people: Any, api: ApiClient) -> None:
    a, b, _, _ = pair(people, api)
    a.start_conversation(b.name)
    a.send("what time is lunch?")
    b.open_conversation(a.name)
    expect(b.messages).to_have_count(1)

    act(b, "what time is lunch?", "Reply")
    expect(b.page.get_by_text(re.compile("Replying to .*what time is lunch"))).to_be_visible()
    b.send("at noon")
    for person in (a, b):
        reply = person.message("at noon")
        expect(reply.locator(".quote")).to_contain_text("what time is lunch?")
    # Edit own message: the new text shows, marked edited, on both sides.
    act(a, "what time is lunch?", "Edit")
    expect(a.composer).to_have_value("what time is lunch?")
    a.composer.fill("what time is dinner?")
    a.composer.press("Enter")
    for person in (a, b):
        expect(person.message("what time is dinner?")).to_contain_text("edited")
        expect(person.message("what time is lunch?")).to_have_count(0)
        expect(person.message("at noon").locator(".quote")).to_contain_text("dinner")
    # Only own messages can be edited or deleted; any can be replied to.
    expect(b.message("dinner").get_by_role("button", name="Edit")).to_have_count(0)
    expect(b.message("at noon").get_by_role("button", name="Edit")).to_have_count(1)
    # Delete own message, after confirming.
    act(a, "what time is dinner?", "Delete")
    dialog = a.page.get_by_role("dialog", name="Delete this message?")
    dialog.get_by_role("button", name="Delete message").click()
    for person in (a, b):
        expect(person.messages.first).to_have_text(re.compile("message deleted"))
        expect(person.message("dinner")).to_have_count(0)
        expect(person.message("at noon").locator(".quote")).to_contain_text("message deleted")
    act(b, "at noon", "Delete")
    b.page.get_by_role("dialog").get_by_role("button", name="Delete message").click()
    for person in (a, b):
        expect(person.messages).to_have_text([re.compile("message deleted")] * 2)
    expect(a.entry(b.name)).to_contain_text("message deleted")


def test_edits_and_deletes_made_while_offline_are_caught_up(people: Any, api: ApiClient) -> None:
    a, b, _, _ = pair(people, api)
    a.start_conversation(b.name)
    for text in ("keep me", "change me", "remove me"):
        a.send(text)
    b.open_conversation(a.name)
    expect(b.messages).to_have_count(3)
    b.go_offline()
    act(a, "change me", "Edit")
    a.composer.fill("changed")
    a.composer.press("Enter")
    expect(a.message("changed")).to_contain_text("edited")
    act(a, "remove me", "Delete")
    a.page.get_by_role("dialog").get_by_role("button", name="Delete message").click()
    a.send("after")
    b.go_online()
    expect(b.messages).to_have_text(
        [
            re.compile("keep me"),
            re.compile("changed.*edited"),
            re.compile("message deleted"),
            re.compile("after"),
        ]
    )


def test_typing_shows_and_stops(people: Any, api: ApiClient) -> None:
    a, b, _, _ = pair(people, api)
    a.start_conversation(b.name)
    a.send("hi")
    b.open_conversation(a.name)
    a.composer.press_sequentially("I am wri")
    typing = b.page.get_by_text(f"{a.name} is typing…")
    expect(typing).to_be_visible()
    a.composer.press("Enter")
    expect(b.message("I am wri")).to_be_visible()
    expect(typing).to_be_hidden()


def test_the_online_dot_follows_presence(people: Any, api: ApiClient) -> None:
    a, b, _, _ = pair(people, api)
    a.start_conversation(b.name)
    a.send("ping")
    dot = a.entry(b.name).locator(".dot")
    expect(dot).to_have_text("online")
    b.page.get_by_role("button", name="Log out").click()
    expect(dot).to_have_count(0, timeout=30_000)  # after the server's grace period
    b.log_in()
    expect(dot).to_have_text("online")


def test_block_and_unblock(people: Any, api: ApiClient) -> None:
    a, b, _, _ = pair(people, api)
    a.start_conversation(b.name)
    a.send("hello")
    b.open_conversation(a.name)
    a.page.get_by_role("button", name="Block", exact=True).click()
    expect(a.page.get_by_role("button", name="Unblock", exact=True)).to_be_visible()
    refused = b.message("can you hear me?")
    with b.refused(403):
        b.send("can you hear me?")
        expect(refused).to_contain_text("You cannot send messages to this user")
    expect(a.message("can you hear me?")).to_have_count(0)
    a.page.reload()  # the block is the server's, not the page's
    a.expect_connected()
    a.page.get_by_role("button", name="Unblock", exact=True).click()
    expect(a.page.get_by_role("button", name="Block", exact=True)).to_be_visible()
    refused.get_by_role("button", name="Retry").click()
    expect(a.message("can you hear me?")).to_be_visible()
    expect(b.message("can you hear me?")).to_have_count(1)


def test_search_finds_messages_and_links_to_them(people: Any, api: ApiClient) -> None:
    (person,) = people(1)
    me, token = api.sign_up(person.name)
    other = "o" + person.name
    other_id, other_token = api.sign_up(other)
    api.send(other_token, me, "the pineapple pizza debate")
    for i in range(60):  # the match is past the first page of history
        api.send(token if i % 2 else other_token, other_id if i % 2 else me, f"filler {i}")
    person.log_in()
    search = person.page.get_by_role("searchbox", name="Search messages")
    search.fill("pinea")  # a word prefix, as one types
    results = person.page.get_by_role("region", name="Search results")
    expect(results).to_contain_text("1 message")
    results.get_by_role("link", name=re.compile(other)).click()
    found = person.message("the pineapple pizza debate")
    expect(found).to_be_focused()
    expect(found).to_be_in_viewport()
    search.fill("")
    expect(results).to_be_hidden()
