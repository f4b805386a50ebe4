"""Echo: reply with what the server saw of a message (the test mail target).

The reply lists the SMTP envelope (sender, recipients, HELO, client, TLS, queue id), each
authentication result (SPF, every DKIM signature, DMARC, ARC, and our
Authentication-Results value), the header fields as they arrived, the MIME structure as
an indented tree, and what the parser had to repair.  It goes through `envelope.reply()`,
so RFC 3834 decides whether it is sent at all.
"""

MAX_HEADER_TEXT = 16 * 1024
MAX_PARTS = 200
MAX_DEPTH = 32


def handle(envelope):
    envelope.reply(report(envelope))


def report(envelope) -> str:
    lines = ["This is what the mail server saw of your message.", ""]
    lines += section("Envelope", envelope_lines(envelope))
    lines += section("Authentication", auth_lines(envelope))
    lines += section("Header", header_lines(envelope))
    lines += section("MIME structure", mime_lines(envelope.message))
    if envelope.defects:
        lines += section("Parser notes", [f"- {d}" for d in envelope.defects[:50]])
    return "\n".join(lines) + "\n"


def section(title: str, body: list[str]) -> list[str]:
    return [title, "-" * len(title), *body, ""]


def envelope_lines(envelope) -> list[str]:
    client = envelope.remote_addr or "unknown"
    if envelope.remote_host:
        client = f"{envelope.remote_host} [{client}]"
    return [
        f"queue id:    {envelope.queue_id}",
        f"MAIL FROM:   <{envelope.sender}>",
        *[f"RCPT TO:     <{r}>" for r in envelope.recipients],
        f"HELO:        {envelope.helo or '(none)'}",
        f"client:      {client}",
        f"TLS:         {envelope.tls or 'no'}",
        f"size:        {len(envelope.raw)} octets (with our trace headers)",
    ]


def auth_lines(envelope) -> list[str]:
    auth = envelope.auth
    if auth is None:
        return ["not checked (the server's [checks] are off)"]
    lines = []
    spf = getattr(auth, "spf", None)
    lines.append(f"SPF:    {describe(spf)}")
    signatures = list(getattr(auth, "dkim", None) or [])
    if not signatures:
        lines.append("DKIM:   none (no signature)")
    for n, signature in enumerate(signatures, 1):
        lines.append(f"DKIM {n}: {describe(signature)}")
    lines.append(f"DMARC:  {describe(getattr(auth, 'dmarc', None))}")
    lines.append(f"ARC:    {describe(getattr(auth, 'arc', None))}")
    header_value = envelope.header("Authentication-Results")
    if header_value:
        lines += ["", f"Authentication-Results: {header_value}"]
    return lines


def describe(result) -> str:
    """'pass (domain=example.org, selector=s1)' from whatever fields a result has."""
    if result is None:
        return "none"
    if isinstance(result, str):
        return result
    details = []
    for name in (
        "domain",
        "from_domain",
        "selector",
        "algorithm",
        "identity",
        "sender",
        "policy",
        "disposition",
        "instances",
        "reason",
    ):
        value = getattr(result, name, None)
        if value not in (None, "", [], ()):
            details.append(f"{name}={value}")
    text = str(getattr(result, "result", "") or "none")
    return f"{text} ({', '.join(details)})" if details else text


def header_lines(envelope) -> list[str]:
    head = envelope.raw.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    if len(head) > MAX_HEADER_TEXT:
        head = head[:MAX_HEADER_TEXT] + f"\n[... {len(head) - MAX_HEADER_TEXT} more characters ...]"
    return ["    " + line for line in head.replace("\r\n", "\n").split("\n")]


def mime_lines(message) -> list[str]:
    lines: list[str] = []
    walk(message, 0, lines)
    return lines


def walk(part, depth: int, lines: list[str]) -> None:
    if len(lines) >= MAX_PARTS:
        if len(lines) == MAX_PARTS:
            lines.append("    ... (more parts not shown)")
        return
    indent = "    " + "  " * depth
    lines.append(indent + part_summary(part))
    if depth >= MAX_DEPTH:
        return
    if part.is_multipart():
        for child in part.get_payload():
            walk(child, depth + 1, lines)


def part_summary(part) -> str:
    try:
        return describe_part(part)
    except Exception as e:  # a hostile part must not stop the report
        return f"(unreadable part: {type(e).__name__})"


def describe_part(part) -> str:
    kind = part.get_content_type()
    details = []
    charset = part.get_param("charset")
    if charset and not part.is_multipart():
        details.append(f"charset={charset}")
    filename = part.get_filename()
    if filename:
        details.append(f'filename="{filename}"')
    if part.get("Content-Transfer-Encoding"):
        details.append(str(part.get("Content-Transfer-Encoding")).strip().lower())
    if not part.is_multipart():
        try:
            data = part.get_payload(decode=True) or b""
            details.append(f"{len(data)} octets")
        except Exception:
            details.append("undecodable")
    return kind + (f" ({', '.join(details)})" if details else "")
