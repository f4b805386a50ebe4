"""The Magic 8-Ball: ask a yes-or-no question in the Subject, get one of its twenty answers back.

Mail to 8ball@<your domain> is answered through `envelope.reply()`, so only where RFC 3834
allows (no bounces, lists or robots; one answer per sender a day; with `[reply]
require_auth`, only authenticated senders).  An empty Subject gets a hint how to ask.
"""

ANSWERS = (
    # affirmative
    "It is certain.",
    "It is decidedly so.",
    "Without a doubt.",
    "Yes definitely.",
    "You may rely on it.",
    "As I see it, yes.",
    "Most likely.",
    "Outlook good.",
    "Yes.",
    "Signs point to yes.",
    # non-committal
    "Reply hazy, try again.",
    "Ask again later.",
    "Better not tell you now.",
    "Cannot predict now.",
    "Concentrate and ask again.",
    # negative
    "Don't count on it.",
    "My reply is no.",
    "My sources say no.",
    "Outlook not so good.",
    "Very doubtful.",
)

HINT = """\
The Magic 8-Ball answers yes-or-no questions, but your message had no Subject.

Put your question in the Subject line, for example:

    Subject: Will it rain tomorrow?

and send it again.
"""


def answer(question: str) -> str:
    """The reply text for QUESTION (the hint when there is none)."""
    import random  # here, not at the top: every connection loads the handlers

    question = " ".join(question.split())
    if not question:
        return HINT
    return f"You asked: {question}\n\nThe Magic 8-Ball says: {random.choice(ANSWERS)}\n"


def handle(envelope):
    envelope.reply(answer(envelope.subject))
