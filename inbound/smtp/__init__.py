"""Stages 1-2: the wire (channel.py, tls.py) and the SMTP session (session.py, with its
grammar in syntax.py, its data readers in data.py, its trace header in received.py, and
every reply by name in replies.py)."""
