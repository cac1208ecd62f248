"""An Alertmanager webhook receiver for the lab: appends every POSTed JSON body to a file.

Usage: webhook_receiver.py ADDRESS:PORT LOGFILE

Each notification becomes one line of LOGFILE (the body re-serialised on one line), so a test
can read what Alertmanager delivered, in order.
"""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_LOCK = threading.Lock()


def _handler(log: Path) -> type[BaseHTTPRequestHandler]:
    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            line = json.dumps(json.loads(body)) + "\n"
            with _LOCK, log.open("a", encoding="utf-8") as file:
                file.write(line)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            """Quiet: the log file is the record."""

    return Receiver


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("listen")
    parser.add_argument("logfile", type=Path)
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    ThreadingHTTPServer((host, int(port)), _handler(args.logfile)).serve_forever()


if __name__ == "__main__":
    main()
