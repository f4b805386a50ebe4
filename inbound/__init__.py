"""inbound: the internals of mailserver, one stage per room, data flowing one way.

    settings.py    the settings' classes and SCHEMA: every key of config.ini, its default
    config.py      config.ini -> those settings, validated (and a compiled cache of them)
    log.py         syslog or a file, the one summary line, exception() for the unexpected
    exits.py       the one sysexits table (commands, handler programs, sendmail)
    outcomes.py    Outcome, TempFail, Reject, HandlerTimeout: what a handler run can come to
    alarm.py       the one owner of SIGALRM: deadlines that nest
    smtp/          stages 1-2: the wire and the SMTP session (RFC 5321), every reply by name
    inetd.py       one connection in inetd mode: the stages wired together, in order
    clients.py     per-client memory shared by all connections: rates, penalties ([limits])
    dnsbl.py       DNS blocklists: is the client listed? (checked at connect)
    srs.py         the Sender Rewriting Scheme: forwards' MAIL FROM, bounces decoded
    serve.py       fast mode: a warm master that forks one inetd-mode child per connection
    policy.py      what the session asks: recipient routes, DMARC reject, INLINE handlers
    spool.py       stage 3: incoming/ -> queue/ -> done/ | failed/; envelope.json, state.json
    checks/        stage 4: SPF, DKIM, DMARC, ARC -> typed results (report, never decide)
    delivery/      stage 5: routing, running handlers, the retry queue
    addresses.py   address lists of From/To/Cc: the one parser of DMARC and the Envelope
    bounded.py     hostile-input bounds before the stdlib email parser
    envelope.py    what a Python handler gets: the message parsed lazily and defensively
    autoreply/     the one outbound part: RFC 3834-safe replies, forwards, their transports
    cli/           the command line: inetd mode, listen, deliver, send, queue, check

Each room imports only rooms later in the flow (or the shared ones at the top); this
file and the __init__.py of smtp/, delivery/ and cli/ import nothing, since every
connection pays for what is imported at start-up.
"""
