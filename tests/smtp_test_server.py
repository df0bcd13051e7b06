#!/usr/bin/python3
# A local SMTP server for tests of o.notify.email (Debian's python3-aiosmtpd, test-only).
#   smtp_test_server.py PORT OUT.jsonl [--reject-rcpt]
# Listens on 127.0.0.1:PORT; appends one JSON line per message to OUT.jsonl: the envelope
# (mail_from, rcpt_tos), the raw message, and what Python's email parser makes of it (decoded
# subject, MIME structure, text of each part). With --reject-rcpt, every RCPT TO gets 550.
# Prints "ready" once it accepts connections; stops on SIGTERM.
import asyncio
import email
import email.policy
import json
import signal
import sys

from aiosmtpd.controller import Controller


class Handler:
    def __init__(self, out, reject):
        self.out, self.reject = out, reject

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.reject:
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        parts = []
        for p in msg.walk():
            if p.is_multipart():
                parts.append({"type": p.get_content_type()})
            else:
                parts.append({"type": p.get_content_type(), "text": p.get_content().replace("\r\n", "\n"),
                              "cte": p.get("Content-Transfer-Encoding", "")})
        rec = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "raw": raw.decode("utf-8", "replace"),
            "subject": str(msg["subject"]),
            "from": str(msg["from"]),
            "to": str(msg["to"]),
            "cc": str(msg["cc"] or ""),
            "date": str(msg["date"]),
            "message_id": str(msg["message-id"]),
            "content_type": msg.get_content_type(),
            "parts": parts,
            "defects": [str(d) for d in msg.defects],
        }
        with open(self.out, "a") as f:
            f.write(json.dumps(rec) + "\n")
        return "250 Message accepted for delivery"


def main():
    port, out = int(sys.argv[1]), sys.argv[2]
    reject = "--reject-rcpt" in sys.argv[3:]
    ctl = Controller(Handler(out, reject), hostname="127.0.0.1", port=port)
    ctl.start()
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.run_until_complete(stop.wait())
    ctl.stop()


if __name__ == "__main__":
    main()
