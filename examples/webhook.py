"""webhook: POST each message as JSON to a URL, signed with HMAC-SHA256.

[handler.webhook] settings:

    url     = https://example.org/hooks/mail   ; where to POST (required)
    secret  =                                  ; HMAC key; empty: no signature header
    timeout = 30                               ; seconds

The body is `envelope.as_dict(with_attachments=True)` as JSON (UTF-8): queue_id, sender,
recipients, helo, remote_addr, subject, from, to, cc, text, html, auth, defects, and
attachments (filename, content_type, size, data in base64).  Headers:

    Content-Type: application/json
    X-Mailserver-Queue-Id: <queue id>
    X-Mailserver-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes with `secret`>

and, with a secret, the Standard Webhooks headers (https://www.standardwebhooks.com),
whose signature also covers the id and the time, so a captured request cannot be
replayed later or as another message:

    webhook-id:        <queue id>  (the same on every retry of this message: dedupe on it)
    webhook-timestamp: <seconds since the epoch, when this attempt was sent>
    webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body" with the key>

The key is `secret` itself, or with a `whsec_` prefix the base64 after it (the form the
Standard Webhooks libraries generate).  A receiver with the `standardwebhooks` package:

    from standardwebhooks import Webhook
    Webhook(secret if secret.startswith("whsec_") else secret.encode()).verify(body, headers)

Verify it on the receiving side before trusting the body, in constant time, over the
body's bytes as they arrived (not a re-encoded JSON), e.g. in Python:

    import hmac
    def verified(secret: bytes, body: bytes, header: str) -> bool:
        expected = "sha256=" + hmac.new(secret, body, "sha256").hexdigest()
        return hmac.compare_digest(header.encode(), expected.encode())

The Standard Webhooks check with the standard library only (a secret without the
`whsec_` prefix; reject a timestamp older than a few minutes, so a captured request
cannot be replayed later):

    import base64, hmac, time
    def fresh_and_verified(secret: bytes, body: bytes, headers: dict, window: int = 300) -> bool:
        sent = headers["webhook-timestamp"]
        if not sent.isdigit() or abs(time.time() - int(sent)) > window:
            return False
        signed = f"{headers['webhook-id']}.{sent}.".encode() + body
        expected = "v1," + base64.b64encode(hmac.new(secret, signed, "sha256").digest()).decode()
        given = headers["webhook-signature"].split()  # several when the key is being rotated
        return any(hmac.compare_digest(s.encode(), expected.encode()) for s in given)

The answer decides: 2xx done; 408, 425, 429 and every 5xx, a redirect, a time-out or no
connection: try again later (TempFail, retried through the queue with backoff); any
other 4xx: refused for good (Reject, the message goes to failed/).  Redirects are not
followed (they would turn the POST into a GET).  Only the standard library is used.
Copy this file into handlers/ to use it.
"""

from mailserver import Reject, TempFail

REQUIRED_SETTINGS = ["url"]  # until it is set, mail to webhook@ gets 451 and `check` says so

RETRYABLE_4XX = {408, 425, 429}


def handle(envelope):
    # Imported here, not at the top: every connection loads the handlers, few call this one.
    import json
    import urllib.error
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):
            return None  # the 3xx becomes an HTTPError below

    url = envelope.config.get("url", "").strip()
    if not url.startswith(("http://", "https://")):
        raise TempFail(f"[handler.{envelope.handler or 'webhook'}] url must be an http(s) URL, got {url!r}")
    body = json.dumps(envelope.as_dict(with_attachments=True), ensure_ascii=False).encode("utf-8")
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "mailserver-webhook/1",
        "X-Mailserver-Queue-Id": envelope.queue_id,
    }
    secret = envelope.config.get("secret", "")
    if secret:
        headers["X-Mailserver-Signature"] = signature(secret, body)
        headers.update(standard_webhook_headers(secret, envelope.queue_id, body))
    timeout = float(envelope.config.get("timeout", "30") or 30)
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as e:
        detail = f"{url} answered {e.code} {e.reason}: {snippet(e)}"
        if 400 <= e.code < 500 and e.code not in RETRYABLE_4XX:
            raise Reject(detail)
        raise TempFail(detail)
    except (urllib.error.URLError, OSError) as e:  # refused, DNS, TLS, time-out
        raise TempFail(f"{url}: {getattr(e, 'reason', e)}")
    if not 200 <= status < 300:
        raise TempFail(f"{url} answered {status}")


def signature(secret: str, body: bytes) -> str:
    import hashlib
    import hmac

    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def standard_webhook_headers(secret: str, message_id: str, body: bytes, now: float | None = None) -> dict:
    """webhook-id, webhook-timestamp and webhook-signature (Standard Webhooks, v1)."""
    import base64
    import hashlib
    import hmac
    import time

    key = base64.b64decode(secret[len("whsec_") :] + "==") if secret.startswith("whsec_") else secret.encode()
    stamp = str(int(time.time() if now is None else now))
    signed = f"{message_id}.{stamp}.".encode() + body
    digest = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {"webhook-id": message_id, "webhook-timestamp": stamp, "webhook-signature": f"v1,{digest}"}


def snippet(error) -> str:
    try:
        return " ".join(error.read(300).decode("utf-8", "replace").split())
    except Exception:
        return ""
