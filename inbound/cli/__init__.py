"""The command line: main.py (inetd mode recognised by hand, argparse for the rest),
admin.py (check, deliver), queue.py (the queue command), listen.py (the dev stand-in for inetd), send.py (the
test client), reply.py (`send --reply` for program handlers)."""
