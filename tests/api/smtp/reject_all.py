"""An aiosmtpd handler that refuses every message with a permanent 550 after DATA, for the
e-mail tests: `python3 -m aiosmtpd -n -l 127.0.0.1:PORT -c reject_all.RejectAll` with this
directory on PYTHONPATH."""


class RejectAll:
    async def handle_DATA(self, server, session, envelope):
        return "550 5.7.1 Message refused by the test server's policy"
