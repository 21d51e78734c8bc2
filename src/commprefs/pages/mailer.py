"""Outgoing mail for "email me a link", over SMTP (COMMPREFS_SMTP_*), from a worker thread."""

import smtplib
import ssl
from email.message import EmailMessage

from commprefs.config import Settings


class Mailer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def enabled(self) -> bool:
        return bool(self.settings.smtp_host)

    def send(self, to: str, subject: str, body: str, language: str) -> None:
        """Send one plain-text mail; blocking, so call it off the event loop."""
        s = self.settings
        assert s.smtp_host is not None
        message = EmailMessage()
        message["From"] = s.smtp_from
        message["To"] = to
        message["Subject"] = subject
        message["Content-Language"] = language
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(body)
        security = s.smtp_security.lower()
        smtp: smtplib.SMTP
        if security == "ssl":
            smtp = smtplib.SMTP_SSL(s.smtp_host, s.smtp_port, timeout=15, context=ssl.create_default_context())
        else:
            smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=15)
        with smtp:
            if security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
            if s.smtp_username:
                smtp.login(s.smtp_username, s.smtp_password or "")
            smtp.send_message(message)
