#!/bin/sh
# hello.sh: the smallest program handler.  Copy it into handlers/ (as `hello`, executable)
# and mail hello@<your domain>.
#
# A program gets the message on stdin (LF line endings) and the envelope in its environment:
# SENDER RECIPIENT LOCAL HOST EXT RECIPIENTS REMOTE_ADDR REMOTE_HOST HELO QUEUE_ID
# SPF_RESULT DKIM_RESULT DMARC_RESULT ARC_RESULT AUTHENTICATION_RESULTS, and CONF_<KEY> for
# each key of its [handler.hello] section.  They come from a possibly malicious client:
# always quote them.  Exit 0 done, 75 try again later, 65/67/77 refuse for good.
#
# [handler.hello]
# log = /var/log/mailserver/hello.log   ; without it the handler reads the message and exits 0
#
# To answer the sender from a program (RFC 3834 checks, [reply] transport, one a day):
#   exec "$PYTHON" "$MAILSERVER" send --reply --body "Hello, $SENDER!"

size=$(wc -c | tr -d ' ')            # read the whole message (and count it)

[ -n "${CONF_LOG:-}" ] || exit 0

printf '%s hello: queue=%s from=<%s> to=<%s> client=%s spf=%s size=%s\n' \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$QUEUE_ID" "$SENDER" "$RECIPIENT" "${REMOTE_ADDR:-unknown}" \
    "${SPF_RESULT:-none}" "$size" >>"$CONF_LOG" || exit 75   # cannot write: try later
exit 0
