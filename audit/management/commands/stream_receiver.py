"""manage.py stream_receiver [--port 8025] [--secret whsec_...]: a small receiver for a
stream, for the demo (`make run` starts it) and for trying streaming out. It prints
each batch it receives, checks the X-Audit-Signature with the secret (or with the
secrets of every stream pointing at it, read from the database) and answers 204, or
401 when the signature does not verify."""

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from django.core.management.base import BaseCommand

from ...delivery import signature_verify
from ...models import Stream


class Command(BaseCommand):
    help = "Receive a stream's batches on 127.0.0.1 and print them, checking signatures."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8025)
        parser.add_argument("--secret", default="", help="The stream's signing secret.")

    def handle(self, *args, port: int, secret: str, **options):
        out = self.stdout

        def secrets_for(path: str) -> list[str]:
            if secret:
                return [secret]
            streams = Stream.objects.filter(url__contains=f":{port}")
            return [s for st in streams for s in (st.secret, st.previous_secret) if s]

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                header = self.headers.get("X-Audit-Signature", "")
                ok = any(signature_verify(body, header, s) for s in secrets_for(self.path))
                self.send_response(204 if ok else 401)
                self.end_headers()
                try:
                    data = json.loads(body).get("data", [])
                except (ValueError, AttributeError):
                    data = []
                out.write(
                    f"stream_receiver: batch {self.headers.get('Idempotency-Key')} "
                    f"{len(data)} event(s), signature {'verified' if ok else 'INVALID'}"
                )
                for event in data:
                    attributes, message = event["attributes"], event["message"]["content"]
                    out.write(f"  {event['id']}  {attributes['time']}  {message}")

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        out.write(f"stream_receiver: listening on http://127.0.0.1:{port}/")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
