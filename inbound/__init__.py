"""inbound: the internals of mailserver, one stage per module, data flowing one way.

    channel.py     the connection: bytes in and out, reads bounded by deadlines
    session.py     the SMTP session (RFC 5321): verbs, limits, smuggling-safe DATA/BDAT
    replies.py     every SMTP reply by name, with its enhanced status code
    spool.py       incoming/ -> queue/ -> done/ | failed/, fsync and atomic renames
    gate.py        what the session asks: recipient routing, DMARC reject, INLINE handlers
    router.py      handler discovery and address routing
    checks.py      SPF, DKIM, DMARC, ARC -> typed results and Authentication-Results
    envelope.py    what a Python handler gets: the message parsed lazily and defensively
    runner.py      running one Python or program handler -> an outcome
    delivery.py    a queued message through checks and handlers; the retry queue
    reply.py       RFC 3834-safe replies and their transports
    connection.py  inetd mode: the stages wired together for one connection
    cli.py, commands.py, listen.py, send.py   the command line

This file imports nothing: every connection pays for what is imported at start-up.
"""
