"""`kaizen_sdk.templates.keeps_messages`: an optimizer's text still reads as a chat version's
messages (the rule the DSPy optimizer applies to new instructions)."""

from __future__ import annotations

from kaizen_sdk.templates import keeps_messages


def test_keeps_messages() -> None:
    chat = "[system]\nBe brief.\n\n[user]\nTicket: {{ ticket }}"
    assert keeps_messages(chat, chat + "\n\n### Examples\nx")
    assert keeps_messages(chat, "[system]\nBe kind.\n\n[user]\n{{ ticket }} (a ticket)")
    assert not keeps_messages(chat, "Be brief.\nTicket: {{ ticket }}")  # headers lost
    assert not keeps_messages(chat, "[user]\nTicket: {{ ticket }}\n\n[system]\nBe brief.")
    assert not keeps_messages(chat, "[system]\nBe brief {{ ticket }}\n\n[user]\nTicket:")
    assert keeps_messages("Ticket: {{ ticket }}", "anything")  # no chat text: nothing to keep
