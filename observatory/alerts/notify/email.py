"""E-mail channel: one message per notification over SMTP, with STARTTLS by default.

``security = "starttls"`` (submission, port 587; RFC 3207) refuses to send
if the server does not offer STARTTLS, so a password never crosses the
network in clear; ``"tls"`` is implicit TLS (port 465, RFC 8314);
``"none"`` is for a relay on the same host. The password comes from a file
readable by its owner only, never from the configuration.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from humus.file_checks import check_private, read_regular
from observatory.alerts.config import EmailSettings
from observatory.alerts.notify.message import Notification, render


class EmailChannel:
    attempts = 3

    def __init__(self, s: EmailSettings) -> None:
        self.s = s
        self.name = f"e-mail via {s.host}:{s.port}"
        self.hint = (f"the SMTP server {s.host}:{s.port} ([alerts.notify.email] host, port, security, username, "
                     "password_file)")

    def _password(self) -> str | None:
        if not self.s.password_file:
            return None
        check_private(self.s.password_file)
        return read_regular(self.s.password_file, 4096).decode().strip().splitlines()[0].strip()

    def message(self, n: Notification) -> EmailMessage:
        title, body = render(n)
        m = EmailMessage()
        m["Subject"] = title
        m["From"] = self.s.sender
        m["To"] = ", ".join(self.s.to)
        m["Date"] = formatdate(localtime=False)
        m["Message-ID"] = make_msgid(domain=self.s.sender.rpartition("@")[2] or None)
        m.set_content(body)
        return m

    def send(self, n: Notification) -> None:
        ctx = ssl.create_default_context(cafile=self.s.ca_file or None)
        s = self.s
        if s.security == "tls":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout_s, context=ctx)
        else:
            smtp = smtplib.SMTP(s.host, s.port, timeout=s.timeout_s)
        with smtp:
            smtp.ehlo()
            if s.security == "starttls":
                if not smtp.has_extn("starttls"):
                    raise RuntimeError(f"{s.host}:{s.port} does not offer STARTTLS; refusing to send in clear "
                                       "(set security = \"tls\" for port 465)")
                smtp.starttls(context=ctx)
                smtp.ehlo()
            password = self._password()
            if s.username:
                smtp.login(s.username, password or "")
            smtp.send_message(self.message(n))
